"""The evaluation scores behave as their definitions say, on the demo registry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from protocols.errors import SchemaError
from protocols.evaluation import HEADLINE_SCORES, evaluate_cohort
from protocols.schema import parse_schema


@pytest.fixture(scope="module")
def pooled(demo_parsed) -> pd.DataFrame:
    return pd.concat(demo_parsed.values(), ignore_index=True)


def _split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    half = len(frame) // 2
    return (frame.iloc[order[:half]].reset_index(drop=True),
            frame.iloc[order[half:]].reset_index(drop=True))


def _independent(frame: pd.DataFrame, rows: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: frame[c].to_numpy()[rng.integers(0, len(frame), rows)]
                         for c in frame.columns})


def test_a_cohort_identical_to_the_records_scores_perfectly_and_is_all_copies(demo_schema, pooled):
    report = evaluate_cohort(demo_schema, pooled, pooled.copy())
    scores = report["scores"]
    assert scores["column_shapes"] == pytest.approx(1.0)
    assert scores["pairwise"] == pytest.approx(1.0)
    assert scores["strong_associations_kept"] == pytest.approx(1.0)
    assert scores["km_distance"] == pytest.approx(0.0)
    assert scores["hr_direction_agreement"] == pytest.approx(1.0)
    assert scores["bias_flags"] == 0
    assert scores["exact_copies"] == len(pooled)  # memorisation is what this score catches


def test_independent_marginals_keep_columns_but_lose_the_associations(demo_schema, pooled):
    scores = evaluate_cohort(demo_schema, pooled, _independent(pooled, 3000))["scores"]
    assert scores["column_shapes"] > 0.95
    assert scores["strong_associations_kept"] < 0.3
    real = evaluate_cohort(demo_schema, pooled, pooled.copy())["scores"]
    assert scores["pairwise"] < real["pairwise"]


def test_fresh_records_from_the_same_population_are_private_and_useful(demo_schema, pooled):
    train, holdout = _split(pooled)
    fresh, rest = _split(holdout, seed=3)
    report = evaluate_cohort(demo_schema, train, fresh, holdout=rest)
    scores = report["scores"]
    assert 0.4 < scores["dcr_share"] < 0.6
    assert 0.4 < scores["mia_auc"] < 0.6
    assert scores["tstr_ratio"] > 0.85
    assert report["utility"]["metric"] == "AUC"


def test_a_cohort_that_memorised_its_training_records_is_caught(demo_schema, pooled):
    train, holdout = _split(pooled)
    scores = evaluate_cohort(demo_schema, train, train.copy(), holdout=holdout)["scores"]
    assert scores["dcr_share"] > 0.95
    assert scores["mia_auc"] > 0.95


def test_bias_flags_an_erased_and_a_shrunk_category(demo_schema, pooled):
    cohort = pooled[pooled["subtype"] != "atypical"].copy()
    classic = cohort.index[cohort["subtype"] == "classic"]
    cohort = cohort.drop(classic[: int(len(classic) * 0.8)])
    flags = {(b["column"], b["category"]): b["flag"]
             for b in evaluate_cohort(demo_schema, pooled, cohort)["bias"]}
    assert flags[("subtype", "atypical")] == "erased"
    assert flags[("subtype", "classic")] == "shrunk"
    assert flags[("sex", "female")] is None


def test_a_numeric_target_is_scored_by_mae(demo_registry, pooled):
    text = demo_registry.schema_yaml.replace("target: treated", "target: bmi")
    schema = parse_schema(text)
    utility = evaluate_cohort(schema, pooled, pooled.copy())["utility"]
    assert utility["metric"] == "MAE" and utility["task"] == "regression"
    assert utility["ratio"] == pytest.approx(1.0, abs=0.15)


def test_the_report_is_strict_json_with_figures(demo_schema, pooled):
    report = evaluate_cohort(demo_schema, pooled, _independent(pooled, 500))
    assert tuple(report["scores"]) == HEADLINE_SCORES
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    columns = [c.name for c in demo_schema.features]
    assert report["figures"]["association"]["columns"] == columns
    shown = [m["column"].removesuffix(" (year)") for m in report["figures"]["marginals"]]
    assert shown == columns
    assert report["figures"]["km"]["real"]["survival"][0] == pytest.approx(1.0)


def test_evaluation_roles_stay_out_of_the_schema_hash(demo_registry):
    with_roles = parse_schema(demo_registry.schema_yaml)
    without = parse_schema(demo_registry.schema_yaml.split("evaluation:")[0])
    assert with_roles.roles.survival == ("survival_months", "death")
    assert without.roles.target is None
    assert with_roles.sha256 == without.sha256


@pytest.mark.parametrize("roles, rule", [
    ("evaluation: {target: nope}", "not a modelled column"),
    ("evaluation: {survival: {time: sex, event: death}}", "numeric or integer"),
    ("evaluation: {survival: {time: bmi, event: sex}}", "boolean column"),
    ("evaluation: {survival: {time: bmi}}", "exactly 'time' and 'event'"),
    ("evaluation: [target]", "must be a mapping"),
])
def test_schema_refuses_impossible_evaluation_roles(demo_registry, roles, rule):
    text = demo_registry.schema_yaml.split("evaluation:")[0] + roles + "\n"
    with pytest.raises(SchemaError, match=rule):
        parse_schema(text, source="s.yaml")


def _nullable_survival_schema(demo_registry):
    """The demo schema with a survival time and event that may be missing."""
    text = demo_registry.schema_yaml
    for name in ("survival_months", "death"):
        head, tail = text.split(f"- name: {name}\n", 1)
        text = head + f"- name: {name}\n" + tail.replace("nullable: false", "nullable: true", 1)
    return parse_schema(text)


def _with(frame: pd.DataFrame, **values) -> pd.DataFrame:
    frame = frame.copy()
    for name, value in values.items():
        frame[name] = value
    return frame


def test_a_numeric_target_unlabelled_in_real_records_leaves_utility_unscored(demo_registry, pooled):
    schema = parse_schema(demo_registry.schema_yaml.replace("target: treated", "target: bmi"))
    train, holdout = _split(pooled)
    unlabelled = _with(train, bmi=np.nan)
    for real, held in ((unlabelled, None), (unlabelled, holdout), (train, _with(holdout, bmi=np.nan))):
        report = evaluate_cohort(schema, real, pooled.copy(), holdout=held, figures=False)
        assert report["scores"]["tstr_ratio"] is None
        json.dumps(report, allow_nan=False)


def test_a_numeric_target_with_one_labelled_real_record_has_no_cross_validated_trtr(
        demo_registry, pooled):
    schema = parse_schema(demo_registry.schema_yaml.replace("target: treated", "target: bmi"))
    real = _with(pooled, bmi=np.nan)
    real.loc[0, "bmi"] = 25.0
    report = evaluate_cohort(schema, real, pooled.copy(), figures=False)
    assert report["utility"]["trtr"] is None and report["scores"]["tstr_ratio"] is None


@pytest.mark.parametrize("which", ["real", "synthetic"])
@pytest.mark.parametrize("column", ["survival_months", "death"])
def test_a_survival_column_missing_everywhere_leaves_the_survival_scores_unscored(
        demo_registry, pooled, which, column):
    schema = _nullable_survival_schema(demo_registry)
    frames = {"real": pooled, "synthetic": pooled.copy()}
    frames[which] = _with(frames[which], **{column: None if column == "death" else np.nan})
    report = evaluate_cohort(schema, frames["real"], frames["synthetic"])
    assert report["scores"]["km_distance"] is None
    assert report["scores"]["hr_direction_agreement"] is None
    assert report["figures"]["km"] is None
    json.dumps(report, allow_nan=False)


def test_a_missing_survival_event_is_left_out_not_counted_as_censored(demo_registry, pooled):
    schema = _nullable_survival_schema(demo_registry)
    real = pooled.copy()
    real.loc[real.index[::3], "death"] = None
    known = real[real["death"].notna()].reset_index(drop=True)
    ratios = evaluate_cohort(schema, real, pooled, figures=False)["survival"]["hazard_ratios"]
    expected = evaluate_cohort(schema, known, pooled, figures=False)["survival"]["hazard_ratios"]
    assert [r["real"] for r in ratios] == pytest.approx([r["real"] for r in expected])


@pytest.mark.parametrize("change, unscored", [
    ({"real": {"bmi": np.nan}, "synthetic": {"bmi": np.nan}}, set()),
    ({"synthetic": {"genotype": None}}, set()),
    ({"real": {"serum_marker": 100.0}, "synthetic": {"serum_marker": 100.0}}, set()),
    ({"real": {"diagnosis_date": 11000.0}}, set()),
    ({"real": {"sex": "female"}, "synthetic": {"sex": "female"}}, set()),
    ({"synthetic": {"treated": "false"}}, set()),
    ({"real": {"treated": "true"}}, {"tstr_ratio"}),
    ({"synthetic": {"death": "false"}}, {"hr_direction_agreement"}),
    ({"real": {"death": "false"}}, {"hr_direction_agreement"}),
])
def test_degenerate_columns_give_a_strict_report_with_only_the_affected_scores_missing(
        demo_schema, pooled, change, unscored):
    real, synthetic = (_with(frame.iloc[:200].reset_index(drop=True), **change.get(key, {}))
                       for key, frame in (("real", pooled), ("synthetic", pooled.iloc[200:])))
    report = evaluate_cohort(demo_schema, real, synthetic, seed=0)
    json.dumps(report, allow_nan=False)
    missing = {k for k, v in report["scores"].items() if v is None}
    assert missing - {"dcr_share", "mia_auc"} == unscored


def test_twenty_rows_each_is_enough_for_a_strict_report(demo_schema, pooled):
    real, synthetic, holdout = (pooled.iloc[i:i + 20].reset_index(drop=True)
                                for i in (0, 20, 40))
    report = evaluate_cohort(demo_schema, real, synthetic, holdout=holdout)
    json.dumps(report, allow_nan=False)
    assert report["scores"]["column_shapes"] is not None
    assert report["scores"]["dcr_share"] is not None
