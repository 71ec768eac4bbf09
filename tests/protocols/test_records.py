"""Tests for reading records files and validating every cell against the schema.

Every file is real: written in tmp_path as CSV (or Parquet) and read back by
`read_table` / `check_file`, the path records take into a node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocols.demo_registry import DemoRegistry
from protocols.errors import RecordError
from protocols.identifier_columns import mask
from protocols.records import (MAX_LISTED_PROBLEMS, MAX_RECORDS_BYTES, Problem, Validation,
                               check_file, read_table, validate_records)
from protocols.schema import Schema, load_schema

WriteCsv = Callable[..., Path]

GOOD_ROW = {
    "patient_id": "H01-00001",
    "age_at_diagnosis": "45",
    "sex": "female",
    "subtype": "classic",
    "genotype": "missense",
    "diagnosis_date": "2012-03-04",
    "bmi": "24.5",
    "serum_marker": "120.25",
    "treated": "true",
    "ecog": "1",
    "survival_months": "76.9",
    "death": "false",
}


def _rows(n: int = 3, **changes_to_last: str) -> pd.DataFrame:
    """`n` valid rows as text; the last row gets `changes_to_last`."""
    rows = [dict(GOOD_ROW, patient_id=f"H01-{i:05d}") for i in range(1, n + 1)]
    rows[-1].update(changes_to_last)
    return pd.DataFrame(rows)


def _write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_valid_demo_site_file_passes(demo_registry: DemoRegistry, demo_schema: Schema,
                                     write_csv: WriteCsv) -> None:
    site = next(iter(demo_registry.sites.values()))
    validation = check_file(write_csv(site), demo_schema)
    assert validation.ok, validation.summary()
    assert validation.n_rows == len(site)
    assert list(validation.parsed.columns) == [c.name for c in demo_schema.features]
    assert "all %d rows are valid" % len(site) in validation.summary()
    validation.raise_if_invalid()


def test_valid_file_is_parsed_to_typed_values(demo_schema: Schema, write_csv: WriteCsv) -> None:
    frame = pd.concat([_rows(1), _rows(1, bmi="", genotype="", treated="No", death=" YES ",
                                       age_at_diagnosis=" 7.0 ")], ignore_index=True)
    validation = check_file(write_csv(frame), demo_schema)
    assert validation.ok, validation.summary()
    parsed = validation.parsed
    assert "patient_id" not in parsed.columns
    assert parsed["age_at_diagnosis"].tolist() == [45.0, 7.0]
    assert parsed["diagnosis_date"].tolist() == [15403.0, 15403.0]  # days since 1970-01-01
    assert parsed["bmi"].iloc[0] == 24.5 and np.isnan(parsed["bmi"].iloc[1])
    assert parsed["genotype"].tolist()[0] == "missense" and parsed["genotype"].isna().tolist()[1]
    assert parsed["treated"].tolist() == ["true", "false"]
    assert parsed["death"].tolist() == ["false", "true"]
    assert parsed["sex"].tolist() == ["female", "female"]


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("age_at_diagnosis", "forty", "not a number"),
        ("bmi", "24,5", "not a number"),
        ("bmi", "nan", "not a number"),
        ("bmi", "inf", "not a finite number"),
        ("age_at_diagnosis", "45.5", "fractional value in an integer column"),
        ("ecog", "1e-3", "fractional value in an integer column"),
        ("age_at_diagnosis", "91", "outside the declared bounds [0, 90]"),
        ("age_at_diagnosis", "-1", "outside the declared bounds [0, 90]"),
        ("bmi", " 9.99 ", "outside the declared bounds [10, 60]"),
        ("serum_marker", "1e6", "outside the declared bounds [0, 500]"),
        ("subtype", "Classic", "not one of the declared categories "
                               "['classic', 'attenuated', 'juvenile', 'atypical']"),
        ("genotype", "unknown", "not one of the declared categories "
                                "['missense', 'nonsense', 'frameshift', 'splice']"),
        ("sex", "", "empty, but the column is not nullable"),
        ("age_at_diagnosis", "   ", "empty, but the column is not nullable"),
        ("treated", "", "empty, but the column is not nullable"),
        ("diagnosis_date", "", "empty, but the column is not nullable"),
        ("diagnosis_date", "2020-02-30", "not a date in YYYY-MM-DD form"),
        ("diagnosis_date", "04/03/2012", "not a date in YYYY-MM-DD form"),
        ("diagnosis_date", "2012-03-04T10:00", "not a date in YYYY-MM-DD form"),
        ("diagnosis_date", "1999-12-31", "outside the declared range [2000-01-01, 2025-12-31]"),
        ("diagnosis_date", "2026-01-01", "outside the declared range [2000-01-01, 2025-12-31]"),
        ("treated", "maybe", "not a boolean (true/false, 1/0, yes/no)"),
        ("death", "2", "not a boolean (true/false, 1/0, yes/no)"),
    ],
)
def test_validator_reports_a_bad_cell_with_row_column_value_and_rule(
        demo_schema: Schema, write_csv: WriteCsv, column: str, value: str, rule: str) -> None:
    path = write_csv(_rows(3, **{column: value}))
    validation = check_file(path, demo_schema)
    assert validation.problems == [Problem(row=3, column=column, value=value, rule=rule)]
    assert not validation.ok
    assert f"row 3, column '{column}', value {value!r}: {rule}" in validation.summary()
    assert str(path) in validation.summary()
    with pytest.raises(RecordError, match="does not conform"):
        validation.raise_if_invalid()


def test_validator_reports_every_bad_cell_in_row_order(demo_schema: Schema,
                                                       write_csv: WriteCsv) -> None:
    frame = _rows(4)
    frame.loc[3, "sex"] = "x"
    frame.loc[1, "ecog"] = "5"
    frame.loc[1, "sex"] = "y"
    frame.loc[0, "death"] = "?"
    validation = check_file(write_csv(frame), demo_schema)
    assert [(p.row, p.column, p.value) for p in validation.problems] == [
        (1, "death", "?"), (2, "sex", "y"), (2, "ecog", "5"), (4, "sex", "x")]


def test_empty_cells_are_missing_in_nullable_columns(demo_schema: Schema,
                                                     write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2, bmi="", serum_marker=" ", genotype="")),
                            demo_schema)
    assert validation.ok, validation.summary()


def test_missing_declared_column_is_a_header_problem(demo_schema: Schema,
                                                     write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2).drop(columns=["bmi"])), demo_schema)
    assert validation.problems == [
        Problem(None, "bmi", "", "declared in the schema but missing from the file")]
    assert "header, column 'bmi'" in validation.summary()


def test_undeclared_extra_column_is_a_header_problem(demo_schema: Schema,
                                                     write_csv: WriteCsv) -> None:
    frame = _rows(2).assign(notes="called on Monday")
    validation = check_file(write_csv(frame), demo_schema)
    assert validation.problems == [
        Problem(None, "notes", "", "not declared in the schema; remove it from the extract "
                "or declare it")]


def test_missing_identifier_column_is_not_a_problem(demo_schema: Schema,
                                                    write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2).drop(columns=["patient_id"])), demo_schema)
    assert validation.ok, validation.summary()


def test_identifier_columns_are_dropped_and_not_validated(demo_schema: Schema,
                                                          write_csv: WriteCsv) -> None:
    frame = _rows(3)
    frame["patient_id"] = ["", "not, an id", "é\u2028"]
    validation = check_file(write_csv(frame), demo_schema)
    assert validation.ok, validation.summary()
    assert "patient_id" not in validation.parsed.columns


def test_validate_records_ignores_identifier_values(demo_schema: Schema) -> None:
    validation = validate_records(_rows(2, patient_id=""), demo_schema, source="frame")
    assert validation.ok and "patient_id" not in validation.parsed.columns


def test_utf8_bom_and_crlf_line_endings_are_accepted(demo_schema: Schema,
                                                     tmp_path: Path) -> None:
    frame = _rows(3)
    # A modelled column first: a BOM left on the header would make it undeclared.
    frame = frame[["age_at_diagnosis"] + [c for c in frame.columns if c != "age_at_diagnosis"]]
    lines = [",".join(frame.columns)] + [",".join(row) for row in frame.to_numpy()]
    path = _write_text(tmp_path / "excel.csv", "\ufeff" + "\r\n".join(lines) + "\r\n")
    validation = check_file(path, demo_schema)
    assert validation.ok, validation.summary()
    assert validation.n_rows == 3
    assert validation.parsed["death"].tolist() == ["false"] * 3


def test_surrounding_spaces_in_the_header_are_ignored(demo_schema: Schema,
                                                      tmp_path: Path) -> None:
    frame = _rows(2)
    lines = [", ".join(frame.columns)] + [",".join(row) for row in frame.to_numpy()]
    validation = check_file(_write_text(tmp_path / "spaced.csv", "\n".join(lines)), demo_schema)
    assert validation.ok, validation.summary()


@pytest.mark.parametrize("content", ["", "\n", " , \n"])
def test_empty_file_raises_record_error(tmp_path: Path, demo_schema: Schema,
                                        content: str) -> None:
    path = _write_text(tmp_path / "empty.csv", content)
    with pytest.raises(RecordError, match="empty.csv is empty"):
        check_file(path, demo_schema)


def test_header_only_file_raises_record_error(tmp_path: Path, demo_schema: Schema) -> None:
    path = _write_text(tmp_path / "header.csv", ",".join(GOOD_ROW) + "\n")
    with pytest.raises(RecordError, match="header.csv has a header but no records"):
        check_file(path, demo_schema)


def test_missing_file_raises_record_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="does not exist"):
        read_table(tmp_path / "nope.csv")


def test_non_utf8_file_raises_record_error(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "latin.csv", "sex\nm\xe4nnlich\n", encoding="latin-1")
    with pytest.raises(RecordError, match=r"latin.csv, line \d+: byte 0x[0-9a-f]{2} is not UTF-8"):
        read_table(path)


def test_row_with_too_many_fields_raises_record_error(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(RecordError,
                       match=r"ragged.csv: row 2 \(line 3\) has 3 field\(s\) but the header has 2"):
        read_table(path)


def test_duplicated_header_name_raises_record_error(tmp_path: Path, demo_schema: Schema) -> None:
    frame = _rows(2)
    lines = [",".join(frame.columns) + ",sex"] + [",".join(r) + ",male" for r in frame.to_numpy()]
    path = _write_text(tmp_path / "dupe.csv", "\n".join(lines))
    with pytest.raises(RecordError, match="header, column 'sex' appears more than once"):
        check_file(path, demo_schema)


def test_semicolon_separated_file_gets_a_hint(demo_schema: Schema, write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2), sep=";"), demo_schema)
    assert not validation.ok
    first = validation.problems[0]
    assert first.row is None and "semicolons" in first.rule
    assert "semicolons" in validation.summary()


def test_comma_separated_file_gets_no_delimiter_hint(demo_schema: Schema,
                                                     write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2).drop(columns=["sex"])), demo_schema)
    assert all("separated by" not in p.rule for p in validation.problems)


def test_parquet_input_is_validated_like_csv(demo_registry: DemoRegistry, demo_schema: Schema,
                                             tmp_path: Path) -> None:
    site = next(iter(demo_registry.sites.values()))
    path = tmp_path / "site.parquet"
    site.to_parquet(path)
    validation = check_file(path, demo_schema)
    assert validation.ok, validation.summary()
    assert validation.n_rows == len(site)
    assert validation.parsed["treated"].isin(["true", "false"]).all()
    assert np.array_equal(validation.parsed["bmi"].isna(), site["bmi"].isna())


def test_parquet_with_native_types_and_a_bad_value(demo_registry: DemoRegistry,
                                                   demo_schema: Schema, tmp_path: Path) -> None:
    site = next(iter(demo_registry.sites.values())).head(5).copy()
    site["diagnosis_date"] = pd.to_datetime(site["diagnosis_date"])
    site["ecog"] = pd.array([0, 1, 2, 3, 7], dtype="Int64")
    path = tmp_path / "site.parquet"
    site.to_parquet(path)
    validation = check_file(path, demo_schema)
    assert validation.problems == [
        Problem(5, "ecog", "7", "outside the declared bounds [0, 4]")]


def test_empty_parquet_raises_record_error(demo_registry: DemoRegistry, tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    next(iter(demo_registry.sites.values())).head(0).to_parquet(path)
    with pytest.raises(RecordError, match="has no records"):
        read_table(path)


def test_damaged_parquet_raises_record_error(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "broken.parquet", "this is not parquet")
    with pytest.raises(RecordError, match="cannot be read as Parquet"):
        read_table(path)


def test_summary_lists_at_most_ten_problems_and_the_total(demo_schema: Schema,
                                                          write_csv: WriteCsv) -> None:
    frame = _rows(15)
    frame["sex"] = "other"
    frame.loc[14, "ecog"] = "9"
    validation = check_file(write_csv(frame), demo_schema)
    assert len(validation.problems) == 16
    summary = validation.summary()
    assert summary.count("column '") == MAX_LISTED_PROBLEMS
    assert "16 problem(s) in 15 rows" in summary
    assert "and 6 more problem(s)" in summary
    assert "row 10," in summary and "row 11," not in summary


def test_summary_of_few_problems_has_no_tail() -> None:
    validation = Validation("f.csv", 4, pd.DataFrame(),
                            [Problem(2, "a", "x", "rule one"), Problem(None, "b", "", "rule two")])
    summary = validation.summary()
    assert summary == ("f.csv does not conform to the schema (2 problem(s) in 4 rows): "
                       "f.csv: row 2, column 'a', value 'x': rule one; "
                       "f.csv: header, column 'b': rule two.")


# --- property: the validator never crashes on arbitrary text -------------------------------

_CELL = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=" \t\u00a0\u3000", max_size=3),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["true", "No", "Y", "classic", "female", "1e400", "-0", "0x10", "1_000",
                     "١٢", "½", "2012-3-4", "NaN", "None", "NA"]),
    st.tuples(st.sampled_from([" ", "\t", ""]), st.integers(-5, 120).map(str),
              st.sampled_from([" ", "", "\u00a0"])).map("".join),
)


@st.composite
def _text_frames(draw: st.DrawFn, columns: list[str]) -> pd.DataFrame:
    n = draw(st.integers(1, 6))
    return pd.DataFrame({c: draw(st.lists(_CELL, min_size=n, max_size=n)) for c in columns})


def _assert_sound(validation: Validation, frame: pd.DataFrame, schema: Schema) -> None:
    assert validation.n_rows == len(frame)
    assert validation.ok == (not validation.problems)
    for problem in validation.problems:
        assert problem.row is not None and 1 <= problem.row <= len(frame)
        assert problem.column in {c.name for c in schema.features}
        cell = str(frame[problem.column].iloc[problem.row - 1])
        assert problem.value == (mask(cell) if problem.masked else cell)
    assert list(validation.parsed.columns) == [c.name for c in schema.features]
    assert len(validation.parsed) == len(frame)
    flagged = {(p.row - 1, p.column) for p in validation.problems}
    for col in schema.features:
        for i, value in enumerate(validation.parsed[col.name]):
            if (i, col.name) in flagged:
                continue
            if pd.isna(value):
                assert col.nullable, (col.name, frame[col.name].iloc[i])
            elif col.type in ("numeric", "integer", "date"):
                assert col.low <= value <= col.high
                assert col.type == "numeric" or float(value).is_integer()
            else:
                assert value in col.categories


@given(data=st.data())
def test_validator_never_crashes_on_arbitrary_text_cells(demo_schema: Schema,
                                                         data: st.DataObject) -> None:
    frame = data.draw(_text_frames([c.name for c in demo_schema.columns]))
    validation = validate_records(frame, demo_schema, source="frame")
    _assert_sound(validation, frame, demo_schema)


@given(data=st.data())
@settings(max_examples=25)
def test_validator_never_crashes_on_arbitrary_text_in_a_real_csv_file(
        demo_schema: Schema, tmp_path_factory: pytest.TempPathFactory,
        data: st.DataObject) -> None:
    frame = data.draw(_text_frames([c.name for c in demo_schema.columns]))
    path = tmp_path_factory.mktemp("cells") / "records.csv"
    # CRLF terminators make the writer quote any cell holding a CR or LF, as Excel does.
    frame.to_csv(path, index=False, lineterminator="\r\n")
    if frame.map(lambda cell: "\x00" in cell).to_numpy().any():
        with pytest.raises(RecordError, match=r"line \d+: contains a NUL byte"):
            check_file(path, demo_schema)
        return
    validation = check_file(path, demo_schema)
    _assert_sound(validation, frame, demo_schema)


def test_short_row_is_refused_not_padded(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(RecordError,
                       match=r"row 2 \(line 3\) has 2 field\(s\) but the header has 3"):
        read_table(path)


# --- files that are not what they claim, and files too large to check --------------------

def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "extract.csv"
    with path.open("wb") as handle:
        handle.truncate(MAX_RECORDS_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(RecordError, match=r"extract.csv is 256 MiB but a node reads records "
                       r"files of at most 256 MiB .*export only the columns"):
        read_table(path)


def test_parquet_whose_uncompressed_size_exceeds_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    pd.DataFrame({"sex": ["female"] * 20_000}).to_parquet(path, use_dictionary=False,
                                                           compression="gzip")
    assert path.stat().st_size < 8 * 2**10  # small on disk, 195 KiB once read
    with pytest.raises(RecordError, match=r"site.parquet is 195.4 KiB uncompressed but a "
                       r"node reads records files of at most 8 KiB"):
        read_table(path, max_bytes=8 * 2**10)


@pytest.mark.parametrize(
    ("start", "what"),
    [(b"PK\x03\x04", "Excel workbook (.xlsx)"), (b"\xd0\xcf\x11\xe0", "(.xls)"),
     (b"PAR1", "Parquet file"), (b"\xff\xfe", "UTF-16 text")],
)
def test_a_spreadsheet_or_other_format_saved_as_csv_is_named(tmp_path: Path, start: bytes,
                                                             what: str) -> None:
    path = tmp_path / "extract.csv"
    path.write_bytes(start + b"rest of the file")
    with pytest.raises(RecordError, match=rf"extract.csv, line 1: the file is .*{re.escape(what)}"):
        read_table(path)


def test_a_nul_byte_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "nul.csv", "sex\nmale\nfe\x00male\n")
    with pytest.raises(RecordError, match=r"nul.csv, line 3: contains a NUL byte"):
        read_table(path)


def test_a_misspelt_column_gets_one_problem_that_names_the_declared_one(
        demo_schema: Schema, write_csv: WriteCsv) -> None:
    frame = _rows(2).rename(columns={"bmi": "BMI", "ecog": "ecgo"})
    validation = check_file(write_csv(frame), demo_schema)
    assert [(p.column, p.rule.split(";")[1]) for p in validation.problems] == [
        ("BMI", " did you mean 'bmi'? rename the column to match the schema (names are "
                "case-sensitive)"),
        ("ecgo", " did you mean 'ecog'? rename the column to match the schema (names are "
                 "case-sensitive)")]


def test_an_undeclared_identifier_column_comes_first_and_its_values_are_masked(
        demo_schema: Schema, write_csv: WriteCsv) -> None:
    frame = _rows(2).assign(ward="A", contact=["", "ann.roe@example.org"])
    validation = check_file(write_csv(frame), demo_schema)
    first = validation.problems[0]
    assert (first.column, first.value, first.masked) == ("contact", "xxx.xxx@xxxxxxx.xxx", True)
    assert first.rule.startswith("looks like a direct identifier (an e-mail address, judging "
                                 "by its values)")
    assert [p.column for p in validation.problems] == ["contact", "ward"]
    assert "ann.roe" not in validation.summary()


def test_a_bad_cell_that_looks_like_an_identifier_is_shown_masked(
        demo_schema: Schema, write_csv: WriteCsv) -> None:
    validation = check_file(write_csv(_rows(2, sex="123-45-6789")), demo_schema)
    assert validation.problems == [
        Problem(2, "sex", "999-99-9999", "not one of the declared categories "
                "['female', 'male']", masked=True)]
    assert "value '999-99-9999' (masked: it looks like a direct identifier)" in (
        validation.summary())


# --- property: any bytes at all, as a real file -------------------------------------------

CORPUS_SCHEMA = load_schema(Path(__file__).parents[1] / "corpus" / "schema.yaml")
_HEADER = b"patient_id,age,weight_kg,sex,subtype,treated,diagnosis_date\n"
_PIECES = st.sampled_from([
    b",", b'"', b"\n", b"\r\n", b"\r", b" ", b";", b"\t", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe",
    b"\xe9", b"\xc3", b"PK\x03\x04", b"female", b"male", b"classic", b"yes", b"maybe", b"34",
    b"-1", b"61.5", b"1e400", b"nan", b"inf", b"71,5", b"2012-03-04", b"2021-02-30",
    b"jane@example.org", b"123-45-6789", b"+44 20 7946 0958", b"age", b"agee", b"ssn",
    b"patient_id", "\u00e9\u4e2d\U0001f600".encode(),
])
_CELL_BYTES = st.one_of(  # mostly well-formed text, so that many files reach the cells
    st.sampled_from([b"", b" ", b"female", b"male", b"classic", b"juvenile", b"true", b"no",
                     b"34", b"120", b"121", b"0.5", b"300", b"2000-01-01", b"2025-12-31",
                     b"1999-12-31", b"P001", b"x@y.org", b"123-45-6789", b"-0", b"1e2"]),
    st.text(max_size=6).map(str.encode),
    _PIECES,
)
_ROWS = st.lists(st.lists(_CELL_BYTES, min_size=7, max_size=7).map(b",".join),
                 min_size=1, max_size=5)
_FILE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(_PIECES, st.binary(max_size=3)), max_size=40).map(b"".join),
    st.tuples(st.sampled_from([_HEADER, b"\xef\xbb\xbf" + _HEADER]),
              st.sampled_from([b"\n", b"\r\n"]), _ROWS)
    .map(lambda parts: parts[0] + parts[1].join(parts[2]) + parts[1]),
)


@given(data=_FILE_BYTES)
def test_check_file_on_any_bytes_returns_a_validation_or_refuses_in_one_line(
        tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "records.csv"
    path.write_bytes(data)
    try:
        validation = check_file(path, CORPUS_SCHEMA)
    except RecordError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc) and "\r" not in str(exc)
        event("refused")
        return
    event("valid" if validation.ok else "rows checked")
    assert isinstance(validation, Validation)
    assert validation.ok == (not validation.problems)
    assert validation.n_rows >= 1
    summary = validation.summary()
    assert "\n" not in summary and "\r" not in summary
    if validation.ok:
        assert list(validation.parsed.columns) == [c.name for c in CORPUS_SCHEMA.features]
