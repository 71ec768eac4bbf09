"""Tests for the data-independent encoder/decoder.

The property tests draw random data dictionaries (every column type, random
bounds, categories and nullability), parse them with the real schema parser,
draw records inside the declared domain as *text* and take them through the
real validator, so the round trip is the one a node and the coordinator run.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from protocols.demo_registry import DemoRegistry
from protocols.encoding import Block, build_encoding, scale, unscale
from protocols.records import check_file, validate_records
from protocols.schema import Column, Schema, parse_schema

EPOCH = dt.date(1970, 1, 1)
LAST_DATE = dt.date(2262, 4, 11)  # pandas' last whole day; the schema refuses later bounds
FEATURE_TYPES = ("numeric", "integer", "categorical", "boolean", "date")
TRUE_SPELLINGS = ("true", "1", "yes", "t", "y", "TRUE", "Yes", " T ")
FALSE_SPELLINGS = ("false", "0", "no", "f", "n", "FALSE", "No", " n ")

# --- strategies -----------------------------------------------------------------------------

_LABELS = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=6).filter(
    lambda s: s.strip() == s)


@st.composite
def column_docs(draw: st.DrawFn, name: str, kind: str) -> dict:
    """One schema entry (as YAML data) of type `kind` with a random public domain."""
    doc: dict = {"name": name, "type": kind}
    if kind == "identifier":
        return doc
    doc["nullable"] = draw(st.booleans())
    if kind == "numeric":
        first = draw(st.floats(-1e9, 1e9))
        second = draw(st.one_of(st.just(first), st.floats(-1e9, 1e9)))
        doc.update(min=min(first, second), max=max(first, second))
    elif kind == "integer":
        low = draw(st.integers(-10**6, 10**6))
        doc.update(min=low, max=low + draw(st.integers(0, 10**6)))
    elif kind == "date":
        low = draw(st.dates(dt.date(1800, 1, 1), dt.date(2200, 1, 1)))
        high = min(low + dt.timedelta(days=draw(st.integers(0, 40_000))), LAST_DATE)
        doc.update(min=low.isoformat(), max=high.isoformat())
    elif kind == "categorical":
        doc["categories"] = draw(st.lists(_LABELS, min_size=1, max_size=5, unique=True))
    return doc


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """A random data dictionary, written as YAML and parsed by `parse_schema`."""
    kinds = draw(st.lists(st.sampled_from(FEATURE_TYPES), min_size=1, max_size=6))
    kinds += ["identifier"] * draw(st.integers(0, 2))
    kinds = draw(st.permutations(kinds))
    docs = [draw(column_docs(f"c{i}_{kind}", kind)) for i, kind in enumerate(kinds)]
    return parse_schema(yaml.safe_dump({"name": "random", "columns": docs}), source="random.yaml")


@st.composite
def cells(draw: st.DrawFn, col: Column) -> tuple[str, object]:
    """A valid text cell for `col` and the value decoding must give back (None = missing)."""
    if col.nullable and draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(["", " ", "  "])), None
    if col.type == "numeric":
        value = draw(st.floats(col.low, col.high))
        return repr(value), value
    if col.type == "integer":
        value = draw(st.integers(int(col.low), int(col.high)))
        return str(value), value
    if col.type == "date":
        value = EPOCH + dt.timedelta(days=draw(st.integers(int(col.low), int(col.high))))
        return value.isoformat(), value
    if col.type == "boolean":
        value = draw(st.booleans())
        return draw(st.sampled_from(TRUE_SPELLINGS if value else FALSE_SPELLINGS)), value
    label = draw(st.sampled_from(col.categories))
    return label, label


@st.composite
def records(draw: st.DrawFn, schema: Schema, max_rows: int = 8) -> tuple[pd.DataFrame, dict]:
    """A text frame of valid records (identifiers included) and the expected decoded values."""
    n = draw(st.integers(1, max_rows))
    text: dict[str, list[str]] = {}
    expected: dict[str, list[object]] = {}
    for col in schema.columns:
        if col.is_identifier:
            text[col.name] = draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))
            continue
        pairs = [draw(cells(col)) for _ in range(n)]
        text[col.name] = [cell for cell, _ in pairs]
        expected[col.name] = [value for _, value in pairs]
    return pd.DataFrame(text), expected


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text with "" for missing, as `read_table` gives them."""
    return frame.astype(object).where(frame.notna(), "").astype(str)


def _parsed(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    validation = validate_records(_as_text(frame), schema, source="drawn")
    assert validation.ok, validation.summary()
    return validation.parsed


# --- the layout -----------------------------------------------------------------------------

def test_demo_layout_follows_the_schema(demo_schema: Schema) -> None:
    encoding = build_encoding(demo_schema)
    assert encoding.blocks == (
        Block("age_at_diagnosis", "continuous", 0, 1),
        Block("sex", "onehot", 1, 2),
        Block("subtype", "onehot", 3, 4),
        Block("genotype", "onehot", 7, 5),
        Block("diagnosis_date", "continuous", 12, 1),
        Block("bmi", "continuous", 13, 1),
        Block("bmi", "missing", 14, 1),
        Block("serum_marker", "continuous", 15, 1),
        Block("serum_marker", "missing", 16, 1),
        Block("treated", "onehot", 17, 2),
        Block("ecog", "continuous", 19, 1),
        Block("survival_months", "continuous", 20, 1),
        Block("death", "onehot", 21, 2),
    )
    assert encoding.width == 23


def test_build_encoding_takes_nothing_but_the_schema() -> None:
    assert list(inspect.signature(build_encoding).parameters) == ["schema"]


def test_encoding_does_not_depend_on_the_records(demo_registry: DemoRegistry,
                                                 demo_schema: Schema) -> None:
    fresh = build_encoding(parse_schema(demo_registry.schema_yaml))
    encoding = build_encoding(demo_schema)
    assert fresh == encoding

    sites = list(demo_registry.sites.values())
    small, large = (_parsed(sites[0], demo_schema), _parsed(sites[-1], demo_schema))
    encoded_small, encoded_large = encoding.encode(small), encoding.encode(large)
    assert encoding == fresh  # encoding data changes nothing about the layout
    assert encoded_small.shape[1] == encoded_large.shape[1] == encoding.width

    extreme = pd.DataFrame([
        {"age_at_diagnosis": "90", "sex": "male", "subtype": "atypical", "genotype": "",
         "diagnosis_date": "2025-12-31", "bmi": "", "serum_marker": "", "treated": "no",
         "ecog": "4", "survival_months": "312", "death": "yes"},
        {"age_at_diagnosis": "0", "sex": "female", "subtype": "juvenile", "genotype": "splice",
         "diagnosis_date": "2000-01-01", "bmi": "10", "serum_marker": "0", "treated": "1",
         "ecog": "0", "survival_months": "0", "death": "0"},
    ] * 50)
    combined = pd.concat([small, large, _parsed(extreme, demo_schema)], ignore_index=True)
    encoded_combined = encoding.encode(combined)
    np.testing.assert_array_equal(encoded_combined[:len(small)], encoded_small)
    np.testing.assert_array_equal(encoded_combined[len(small):len(small) + len(large)],
                                  encoded_large)


def test_encoding_scales_by_declared_bounds_not_the_observed_range(
        demo_registry: DemoRegistry, demo_schema: Schema) -> None:
    site = next(iter(demo_registry.sites.values()))
    encoding = build_encoding(demo_schema)
    encoded = encoding.encode(_parsed(site, demo_schema))
    for name, (low, high) in {"age_at_diagnosis": (0, 90), "survival_months": (0, 312),
                              "ecog": (0, 4)}.items():
        start = encoding.blocks_of(name)[0].start
        expected = (site[name].to_numpy(dtype=float) - low) / (high - low)
        np.testing.assert_allclose(encoded[:, start], expected, rtol=1e-6, atol=1e-7)
    bmi = encoding.blocks_of("bmi")
    missing = site["bmi"].isna().to_numpy()
    np.testing.assert_array_equal(encoded[:, bmi[1].start], missing.astype(np.float32))
    np.testing.assert_array_equal(encoded[missing, bmi[0].start], 0.5)


def test_encoding_of_discrete_columns_is_one_hot_in_declared_order(demo_schema: Schema) -> None:
    frame = pd.DataFrame([dict(
        age_at_diagnosis="45", sex="male", subtype="juvenile", genotype=genotype,
        diagnosis_date="2010-01-01", bmi="20", serum_marker="1", treated=treated, ecog="2",
        survival_months="3", death="false") for genotype, treated in
        (("", "true"), ("missense", "false"), ("splice", "yes"))])
    encoding = build_encoding(demo_schema)
    encoded = encoding.encode(_parsed(frame, demo_schema))
    sex, subtype = encoding.blocks_of("sex")[0], encoding.blocks_of("subtype")[0]
    genotype, treated = encoding.blocks_of("genotype")[0], encoding.blocks_of("treated")[0]
    assert encoded[:, sex.start:sex.stop].tolist() == [[0, 1]] * 3
    assert encoded[:, subtype.start:subtype.stop].tolist() == [[0, 0, 1, 0]] * 3
    assert encoded[:, genotype.start:genotype.stop].tolist() == [
        [0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    assert encoded[:, treated.start:treated.stop].tolist() == [[0, 1], [1, 0], [0, 1]]
    assert encoded.dtype == np.float32


def test_demo_sites_round_trip_through_encode_and_decode(demo_registry: DemoRegistry,
                                                         demo_schema: Schema) -> None:
    encoding = build_encoding(demo_schema)
    for site in demo_registry.sites.values():
        decoded = encoding.decode(encoding.encode(_parsed(site, demo_schema)))
        assert list(decoded.columns) == list(site.columns)
        for col in demo_schema.features:
            if col.type == "numeric":
                np.testing.assert_allclose(decoded[col.name], site[col.name],
                                           atol=1e-6 * (col.high - col.low))
            elif col.type == "date":
                assert [d.isoformat() for d in decoded[col.name]] == site[col.name].tolist()
            else:
                want = site[col.name].astype(object).where(site[col.name].notna(), None)
                assert decoded[col.name].tolist() == want.tolist()
        assert decoded["age_at_diagnosis"].dtype == np.int64
        assert decoded["treated"].dtype == bool


def test_decode_fills_identifiers_with_synthetic_labels(demo_schema: Schema) -> None:
    encoding = build_encoding(demo_schema)
    decoded = encoding.decode(np.zeros((3, encoding.width), dtype=np.float32))
    assert decoded["patient_id"].tolist() == [
        "synthetic-000001", "synthetic-000002", "synthetic-000003"]
    assert encoding.decode(np.zeros((1, encoding.width)), id_prefix="trial")[
        "patient_id"].tolist() == ["trial-000001"]


def test_scale_maps_a_point_domain_to_the_middle_and_unscale_clips() -> None:
    point = Column("p", "numeric", low=4.0, high=4.0)
    assert scale(point, np.array([4.0])).tolist() == [0.5]
    assert unscale(point, np.array([0.0, 0.5, 7.0, np.nan])).tolist() == [4.0] * 4
    span = Column("s", "numeric", low=-2.0, high=6.0)
    assert unscale(span, np.array([-1.0, 0.0, 0.25, 1.0, 2.0, np.nan, np.inf, -np.inf])
                   ).tolist() == [-2.0, -2.0, 0.0, 6.0, 6.0, 2.0, 6.0, -2.0]


def test_decoding_the_top_of_the_unit_range_stays_below_max() -> None:
    # low + 1.0 * (high - low) rounds above `high` for these bounds.
    col = Column("x", "numeric", low=-380083.6798297656, high=0.8690100901858988)
    assert unscale(col, np.array([1.0]))[0] <= col.high
    assert unscale(col, np.array([0.0]))[0] >= col.low


def test_decoded_values_at_awkward_bounds_validate(tmp_path: Path) -> None:
    schema = parse_schema("columns: [{name: x, type: numeric, "
                          "min: -380083.6798297656, max: 0.8690100901858988}]")
    encoding = build_encoding(schema)
    decoded = encoding.decode(np.array([[1.0], [0.0], [np.inf]]))
    assert (decoded["x"] <= 0.8690100901858988).all()
    path = tmp_path / "synthetic.csv"
    decoded.to_csv(path, index=False)
    validation = check_file(path, schema)
    assert validation.ok, validation.summary()


# --- properties -----------------------------------------------------------------------------

def _assert_decoded_types(decoded: pd.DataFrame, schema: Schema) -> None:
    assert list(decoded.columns) == [c.name for c in schema.columns]
    for col in schema.columns:
        series = decoded[col.name]
        if col.is_identifier:
            assert series.str.fullmatch(r"synthetic-\d{6}").all()
        elif col.type == "numeric":
            assert series.dtype == np.float64
        elif col.type == "integer":
            assert series.dtype == (pd.Int64Dtype() if col.nullable else np.int64)
        elif col.type == "boolean":
            assert series.dtype == (pd.BooleanDtype() if col.nullable else np.bool_)
        elif col.type == "date":
            assert all(isinstance(v, dt.date) for v in series.dropna())


@given(data=st.data())
def test_encode_decode_round_trips_valid_records(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    frame, expected = data.draw(records(schema))
    encoding = build_encoding(schema)
    encoded = encoding.encode(_parsed(frame, schema))
    assert encoded.shape == (len(frame), encoding.width)
    decoded = encoding.decode(encoded)
    _assert_decoded_types(decoded, schema)
    for col in schema.features:
        for i, want in enumerate(expected[col.name]):
            got = decoded[col.name].iloc[i]
            if want is None:
                assert pd.isna(got), (col, i, got)
            elif col.type == "numeric":
                # float32 keeps ~7 digits of the scaled value; float64 rounding adds a few ulps.
                slack = 1e-6 * (col.high - col.low) + 4 * math.ulp(max(abs(col.low),
                                                                        abs(col.high)))
                assert abs(got - want) <= slack, (col, want, got)
            else:
                assert got == want, (col, want, got)


@given(data=st.data())
def test_encoding_of_a_record_depends_on_that_record_alone(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    frame, _ = data.draw(records(schema))
    others, _ = data.draw(records(schema))
    encoding = build_encoding(schema)
    parsed = _parsed(frame, schema)
    alone = encoding.encode(parsed)
    mixed = encoding.encode(_parsed(pd.concat([others, frame, others], ignore_index=True),
                                    schema))
    np.testing.assert_array_equal(mixed[len(others):len(others) + len(frame)], alone)
    for i in range(len(frame)):
        np.testing.assert_array_equal(encoding.encode(parsed.iloc[[i]])[0], alone[i])


_ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, -0.0, 1e308, -1e308, 0.5000001, 0.4999999]),
)


def _assert_inside_domain(decoded: pd.DataFrame, schema: Schema) -> None:
    for col in schema.features:
        series = decoded[col.name]
        if not col.nullable:
            assert not series.isna().any(), col
        values = series.dropna()
        if col.type in ("numeric", "integer"):
            assert ((values >= col.low) & (values <= col.high)).all(), (col, values.tolist())
            assert values.map(math.isfinite).all()
        elif col.type == "date":
            days = [(v - EPOCH).days for v in values]
            assert all(col.low <= d <= col.high for d in days), (col, values.tolist())
        elif col.type == "categorical":
            assert set(values) <= set(col.categories), (col, values.tolist())
        else:
            assert set(values.tolist()) <= {True, False}


@given(data=st.data())
@settings(max_examples=40)
def test_decoding_any_matrix_stays_inside_the_declared_domain(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    schema = data.draw(schemas())
    encoding = build_encoding(schema)
    n = data.draw(st.integers(1, 6))
    dtype = data.draw(st.sampled_from([np.float64, np.float32]))
    matrix = data.draw(arrays(np.float64, (n, encoding.width), elements=_ANY_FLOAT))
    with np.errstate(over="ignore"):
        matrix = matrix.astype(dtype)
    decoded = encoding.decode(matrix)
    assert len(decoded) == n
    _assert_decoded_types(decoded, schema)
    _assert_inside_domain(decoded, schema)

    path = tmp_path_factory.mktemp("decoded") / "synthetic.csv"
    # CRLF terminators make pandas quote a label holding a lone CR (it does not otherwise).
    decoded.to_csv(path, index=False, lineterminator="\r\n")
    validation = check_file(path, schema)
    assert validation.ok, validation.summary()
    assert validation.n_rows == n


def test_decoded_demo_samples_validate_as_a_file(demo_schema: Schema, tmp_path: Path) -> None:
    encoding = build_encoding(demo_schema)
    rng = np.random.default_rng(0)
    samples = rng.normal(0.5, 2.0, size=(200, encoding.width)).astype(np.float32)
    samples[::7] = np.nan
    samples[1::11] = np.inf
    path = tmp_path / "synthetic.csv"
    encoding.decode(samples).to_csv(path, index=False)
    validation = check_file(path, demo_schema)
    assert validation.ok, validation.summary()
