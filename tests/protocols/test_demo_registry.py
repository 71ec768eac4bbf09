"""Tests for the built-in simulated multi-site rare-disease registry."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import yaml

from protocols.demo_registry import DemoRegistry, simulate_registry


@pytest.fixture(scope="module")
def registry() -> DemoRegistry:
    return simulate_registry()


@pytest.fixture(scope="module")
def pooled(registry: DemoRegistry) -> pd.DataFrame:
    return pd.concat(registry.sites.values(), ignore_index=True)


def _columns(registry: DemoRegistry) -> list[dict]:
    return yaml.safe_load(registry.schema_yaml)["columns"]


def _assert_within_schema(registry: DemoRegistry) -> None:
    columns = _columns(registry)
    for df in registry.sites.values():
        assert list(df.columns) == [c["name"] for c in columns]
        for col in columns:
            values = df[col["name"]]
            if not col.get("nullable", False):
                assert not values.isna().any(), col["name"]
            present = values.dropna()
            kind = col["type"]
            if kind in ("integer", "numeric"):
                assert present.between(col["min"], col["max"]).all(), col["name"]
            elif kind == "categorical":
                assert set(present) <= set(col["categories"]), col["name"]
            elif kind == "date":
                parsed = pd.to_datetime(present, format="%Y-%m-%d")
                assert parsed.min() >= pd.Timestamp(col["min"]), col["name"]
                assert parsed.max() <= pd.Timestamp(col["max"]), col["name"]
            elif kind == "boolean":
                assert values.dtype == bool, col["name"]


def test_schema_structure(registry: DemoRegistry) -> None:
    schema = yaml.safe_load(registry.schema_yaml)
    assert schema["name"] == "fedsynth-demo-registry"
    names = [c["name"] for c in schema["columns"]]
    assert names == [
        "patient_id", "age_at_diagnosis", "sex", "subtype", "genotype", "diagnosis_date",
        "bmi", "serum_marker", "treated", "ecog", "survival_months", "death",
    ]
    for col in schema["columns"][1:]:
        assert isinstance(col["nullable"], bool)
    date = next(c for c in schema["columns"] if c["type"] == "date")
    assert date["min"] == "2000-01-01" and date["max"] == "2025-12-31"


def test_deterministic_for_seed() -> None:
    first, second = simulate_registry(seed=11), simulate_registry(seed=11)
    assert first.schema_yaml == second.schema_yaml
    assert list(first.sites) == list(second.sites)
    for name in first.sites:
        pd.testing.assert_frame_equal(first.sites[name], second.sites[name])


def test_different_seeds_differ() -> None:
    a, b = simulate_registry(seed=1), simulate_registry(seed=2)
    assert any(not a.sites[n].equals(b.sites[n]) for n in a.sites)


@pytest.mark.parametrize("n_sites", [5, 6, 9, 12])
def test_site_names_and_sizes(n_sites: int) -> None:
    sites = simulate_registry(seed=3, n_sites=n_sites).sites
    assert list(sites) == [f"hospital-{i:02d}" for i in range(1, n_sites + 1)]
    sizes = [len(df) for df in sites.values()]
    assert min(sizes) == 40 and max(sizes) == 400
    assert all(40 <= s <= 400 for s in sizes)
    assert len(set(sizes)) == n_sites


@pytest.mark.parametrize("n_sites", [0, 4, 13])
def test_invalid_site_count(n_sites: int) -> None:
    with pytest.raises(ValueError):
        simulate_registry(n_sites=n_sites)


def test_values_within_declared_bounds(registry: DemoRegistry) -> None:
    _assert_within_schema(registry)


def test_dtypes(pooled: pd.DataFrame) -> None:
    for name in ("age_at_diagnosis", "ecog"):
        assert pooled[name].dtype == np.int64
    for name in ("treated", "death"):
        assert pooled[name].dtype == bool
    assert pooled["diagnosis_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert (pooled["survival_months"] >= 0.1).all()


def test_rare_subtype_share(pooled: pd.DataFrame) -> None:
    share = (pooled["subtype"] == "atypical").mean()
    assert 0 < share < 0.03


def test_missingness(registry: DemoRegistry, pooled: pd.DataFrame) -> None:
    nullable = {c["name"] for c in _columns(registry) if c.get("nullable")}
    missing = pooled.isna().mean()
    assert set(missing[missing > 0].index) == nullable
    for name, expected in (("genotype", 0.10), ("bmi", 0.08), ("serum_marker", 0.05)):
        assert 0 < missing[name] < 2.5 * expected


def test_patient_ids_unique(pooled: pd.DataFrame) -> None:
    assert pooled["patient_id"].is_unique
    assert pooled["patient_id"].str.fullmatch(r"H\d{2}-\d{5}").all()


def test_sites_are_non_iid(registry: DemoRegistry) -> None:
    categories = ["classic", "attenuated", "juvenile", "atypical"]
    mixes = [df["subtype"].value_counts(normalize=True).reindex(categories, fill_value=0.0)
             for df in registry.sites.values()]
    tv = max(0.5 * (a - b).abs().sum() for a, b in itertools.combinations(mixes, 2))
    assert tv > 0.2
    ages = [df["age_at_diagnosis"].mean() for df in registry.sites.values()]
    assert max(ages) - min(ages) > 10


def test_clinical_associations(pooled: pd.DataFrame) -> None:
    by_subtype = pooled.groupby("subtype")
    assert by_subtype["age_at_diagnosis"].mean()["juvenile"] < 20
    markers = by_subtype["serum_marker"].median()
    assert markers["classic"] > markers["attenuated"]
    assert by_subtype["death"].mean()["classic"] > by_subtype["death"].mean()["attenuated"]
    assert 0 < pooled["death"].mean() < 1


@pytest.mark.parametrize(
    ("seed", "n_sites"),
    [(0, 5), (1, 12), (42, 7), (123456, 8), (2**31 - 1, 10), (98765, 11)],
)
def test_invariants_across_seeds(seed: int, n_sites: int) -> None:
    registry = simulate_registry(seed=seed, n_sites=n_sites)
    _assert_within_schema(registry)
    pooled = pd.concat(registry.sites.values(), ignore_index=True)
    assert 0 < (pooled["subtype"] == "atypical").mean() < 0.03
    assert pooled["patient_id"].is_unique
