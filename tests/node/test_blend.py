"""`fedsynth-node blend`: the blending advisor, on real files and a real signed release.

The consortium is provisioned for real and the cohort released by the
coordinator's own `release_cohort`, signed with the coordinator kit's key; the
fold logic, the ratio grid and the recommendation rule are pinned through the
functions `blend_curve` itself runs.
"""

import contextlib
import math
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.cohort import release_cohort
from coordinator.provisioning.signing_key import load_signing_key
from node.cli import main as node_main
from protocols.errors import FedsynthError
from protocols.evaluation.blend import (RATIO_GRID, BlendResult, Curve, blend_curve, make_folds,
                                        ratio_grid, recommend, training_and_test)
from protocols.evaluation.report.blend import blend_fragment, clinician_sentence
from protocols.plan import StudyPlan
from protocols.release.manifest import SitePrivacySpent
from simulation.cli import main as coordinator_main

SITE, COHORT_SOURCE = "hospital-01", "hospital-06"  # 40 records; a 400-row cohort


@pytest.fixture(scope="module")
def consortium(tmp_path_factory, demo_registry) -> Path:
    """A provisioned consortium, the schema, one site's records and a signed release."""
    root = tmp_path_factory.mktemp("consortium")
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(root / "kits")]) == 0
    (root / "schema.yaml").write_text(demo_registry.schema_yaml)
    demo_registry.sites[SITE].to_csv(root / "site.csv", index=False)
    return root


def _release(folder: Path, frame, schema, key: Ed25519PrivateKey) -> Path:
    release_cohort(frame, folder, schema=schema, plan=StudyPlan(rounds=2),
                   sites={"siteA": SitePrivacySpent(1.9, 40)}, contributions={"siteA": [1, 2]},
                   engine="deployment", signing_key=key, tls=True)
    return folder


@pytest.fixture(scope="module")
def cohort(consortium, demo_registry, demo_schema) -> Path:
    key = load_signing_key(consortium / "kits" / "coordinator" / "manifest-signing.key")
    return _release(consortium / "cohort", demo_registry.sites[COHORT_SOURCE], demo_schema, key)


def _blend(consortium: Path, synthetic: Path, out: Path, *extra: str,
           schema: Path | None = None) -> int:
    return node_main(["blend", "--schema", str(schema or consortium / "schema.yaml"),
                      "--data", str(consortium / "site.csv"), "--synthetic", str(synthetic),
                      "--out", str(out), *extra])


@pytest.fixture(scope="module")
def blended(consortium, cohort) -> tuple[Path, str]:
    """One end-to-end run with the kit: the output folder and what it printed."""
    out = consortium / "advice"
    capture = consortium / "stdout.txt"
    with capture.open("w") as handle, contextlib.redirect_stdout(handle):
        code = _blend(consortium, cohort, out, "--kit", str(consortium / "kits" / "siteA"))
    assert code == 0
    return out, capture.read_text()


def test_blend_writes_the_curve_and_the_advice_for_the_sites_own_patients(blended, cohort):
    out, printed = blended
    report = json.loads((out / "blend.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["blend.html", "blend.json"]
    assert report["ratios"] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]  # 400 / 40 caps 16×
    assert report["real_records"] == 40 and report["synthetic_records"] == 400
    assert set(report["metrics"]) == {"AUC", "Brier score", "concordance index"}
    assert report["metrics"]["AUC"]["outcome"] == "treated"
    assert report["metrics"]["concordance index"]["outcome"] == "survival_months / death"
    assert all(len(m["mean"]) == len(report["ratios"]) for m in report["metrics"].values())
    assert report["recommendation"]["ratio"] in report["ratios"]
    assert report["recommendation"]["metric"] == "AUC"
    assert [r["outcome"] for r in report["recommendations"]] == ["treated",
                                                                 "survival_months / death"]
    assert report["inputs"]["signature"].startswith("verified: signed by the consortium key")
    assert report["protocol"]["splits"] == 25
    assert report["sentence"] in printed and "note:" not in printed


def test_the_page_is_self_contained(blended):
    page = (blended[0] / "blend.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert 'src="data:image/png;base64,' in page


def test_the_fragment_is_embeddable_and_carries_curve_and_sentence(blended):
    report = json.loads((blended[0] / "blend.json").read_text())
    fragment = blend_fragment(report)
    assert "<html" not in fragment and "<body" not in fragment
    assert 'src="data:image/png;base64,' in fragment
    assert report["sentence"].split(" (")[0] in fragment


def test_ratio_grid_is_capped_by_the_cohort():
    assert ratio_grid(40, 2000) == RATIO_GRID
    assert ratio_grid(40, 160) == (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    assert ratio_grid(40, 100) == (0.0, 0.25, 0.5, 1.0, 2.0, 2.5)
    assert ratio_grid(40, 5) == (0.0, 0.125)


def test_no_synthetic_record_in_a_test_fold_and_no_test_record_in_training():
    strata = np.array([0] * 26 + [1] * 14)
    real_ids, synthetic_ids = np.arange(40), np.arange(1000, 1400)
    folds = make_folds(strata, len(synthetic_ids), folds=5, repeats=3, seed=7)
    assert len(folds) == 15
    for fold in folds:
        for ratio in ratio_grid(40, 400):
            train, test = training_and_test(fold, real_ids, synthetic_ids, ratio)
            assert set(test) <= set(real_ids)
            assert not set(test) & set(train)
            added = np.setdiff1d(train, real_ids)
            assert set(added) <= set(synthetic_ids)
            assert len(added) == round(ratio * len(fold.train))
        assert set(np.unique(strata[fold.test])) == {0, 1}  # stratified
    for repeat in range(3):  # each repeat tests every real record exactly once
        tested = np.concatenate([f.test for f in folds if f.repeat == repeat])
        assert sorted(tested) == list(real_ids)


def test_folds_and_draws_replay_from_the_seed():
    strata = np.array([0, 1] * 15)
    first, again = (make_folds(strata, 90, 3, 2, seed=3) for _ in range(2))
    other = make_folds(strata, 90, 3, 2, seed=4)
    assert all(np.array_equal(a.test, b.test) and
               np.array_equal(a.synthetic_order, b.synthetic_order)
               for a, b in zip(first, again))
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(first, other))


def test_blend_curve_replays_exactly(demo_parsed, demo_schema):
    runs = [blend_curve(demo_schema, demo_parsed[SITE], demo_parsed[COHORT_SOURCE], "treated",
                        None, seed=1, folds=3, repeats=1) for _ in range(2)]
    assert runs[0].to_json() == runs[1].to_json()


def _curve(means: list[float], half_spread: float, higher_is_better: bool = True) -> Curve:
    """Two splits per ratio at mean ± d: the standard error is then exactly d."""
    scores = np.array([[m - half_spread, m + half_spread] for m in means])
    return Curve("AUC" if higher_is_better else "Brier score", "y", "model",
                 higher_is_better, scores)


def test_recommendation_is_the_smallest_ratio_within_one_standard_error_of_the_best():
    ratios = (0.0, 0.5, 1.0, 2.0, 4.0)
    rec = recommend(_curve([0.70, 0.75, 0.80, 0.82, 0.72], 0.03), ratios)
    assert (rec.ratio, rec.best_ratio) == (1.0, 2.0)
    assert "within one standard error" in rec.rule
    lower = recommend(_curve([0.20, 0.15, 0.17, 0.12, 0.30], 0.01, False), ratios)
    assert (lower.ratio, lower.best_ratio) == (2.0, 2.0)


def _result(curve: Curve, ratios: tuple[float, ...]) -> BlendResult:
    return BlendResult(ratios, (curve,), (recommend(curve, ratios),), 40, 400, 5, 5, 0, "y")


def test_the_sentence_says_what_mixing_did_and_where_it_stopped_helping():
    ratios = (0.0, 0.5, 1.0, 2.0, 4.0)
    sentence = clinician_sentence(_result(_curve([0.70, 0.75, 0.80, 0.82, 0.72], 0.03),
                                          ratios))
    assert sentence.startswith("Mixing 1× synthetic records (about 40 added to your 40 "
                               "patients) improved the AUC for y from 0.70 ± 0.03 to "
                               "0.80 ± 0.03")
    assert sentence.endswith("beyond 2× it fell (0.72 ± 0.03 at 4×).")
    flat = clinician_sentence(_result(_curve([0.80, 0.81, 0.79, 0.80, 0.80], 0.03), ratios))
    assert "did not improve the AUC for y" in flat and "on your own records alone" in flat


def test_a_cohort_signed_by_another_key_is_refused_and_nothing_is_written(
        consortium, demo_registry, demo_schema, tmp_path, capsys):
    forged = _release(tmp_path / "forged", demo_registry.sites[COHORT_SOURCE], demo_schema,
                      Ed25519PrivateKey.generate())
    out = tmp_path / "advice"
    assert _blend(consortium, forged, out, "--kit", str(consortium / "kits" / "siteA")) == 2
    err = capsys.readouterr().err
    assert "does not verify against the consortium key" in err and "not by the trusted key" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_cohort_of_another_schema_is_refused(consortium, cohort, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text((consortium / "schema.yaml").read_text().replace("max: 90", "max: 95", 1))
    out = tmp_path / "advice"
    assert _blend(consortium, cohort, out, schema=other) == 2
    err = capsys.readouterr().err
    assert "the cohort follows the schema with SHA-256" in err and str(other) in err
    assert not out.exists()


def test_records_that_are_not_a_fedsynth_cohort_are_refused(consortium, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "synthetic.csv").write_text((consortium / "site.csv").read_text())
    for given in (plain, plain / "synthetic.csv", tmp_path / "absent"):
        assert _blend(consortium, given, tmp_path / "advice") == 2
        err = capsys.readouterr().err
        assert f"--synthetic {given}" in err and "Traceback" not in err
    assert not (tmp_path / "advice").exists()


def test_a_schema_without_an_outcome_is_refused_unless_a_target_is_given(consortium, cohort,
                                                                         tmp_path, capsys):
    text = (consortium / "schema.yaml").read_text()
    bare = tmp_path / "bare.yaml"
    bare.write_text(text[:text.index("evaluation:")])  # roles are not part of the hash
    assert _blend(consortium, cohort, tmp_path / "advice", schema=bare) == 2
    assert "declares no outcome to predict" in capsys.readouterr().err
    assert _blend(consortium, cohort, tmp_path / "advice", "--target", "no_such_column") == 2
    assert "--target 'no_such_column' is not a modelled column" in capsys.readouterr().err
    assert not (tmp_path / "advice").exists()


def test_a_numeric_target_is_scored_by_mean_absolute_error(demo_parsed, demo_schema):
    result = blend_curve(demo_schema, demo_parsed["hospital-04"], demo_parsed[COHORT_SOURCE],
                         "age_at_diagnosis", None, folds=3, repeats=1).to_json()
    assert list(result["metrics"]) == ["MAE"]
    assert result["metrics"]["MAE"]["higher_is_better"] is False
    assert result["protocol"]["stratified_by"] == "quantile bins of age_at_diagnosis"


def test_a_site_too_small_to_cross_validate_is_refused(demo_parsed, demo_schema):
    with pytest.raises(FedsynthError, match="too few to cross-validate"):
        blend_curve(demo_schema, demo_parsed[SITE].head(3), demo_parsed[COHORT_SOURCE],
                    "treated", None)


def test_a_site_with_no_outcome_known_is_refused_not_a_traceback(demo_parsed, demo_schema):
    unknown = demo_parsed[SITE].assign(treated=pd.NA)
    with pytest.raises(FedsynthError, match="form 0 group"):
        blend_curve(demo_schema, unknown, demo_parsed[COHORT_SOURCE], "treated", None)


def test_a_curve_no_split_could_score_is_refused_not_a_traceback():
    with pytest.raises(FedsynthError, match="No split could score the AUC"):
        recommend(_curve([math.nan] * 5, 0.0), (0.0, 0.25, 0.5, 1.0, 2.0))


def test_a_cohort_given_as_the_sites_records_is_refused(consortium, cohort, tmp_path, capsys):
    code = node_main(["blend", "--schema", str(consortium / "schema.yaml"),
                      "--data", str(cohort / "synthetic.csv"), "--synthetic", str(cohort),
                      "--out", str(tmp_path / "advice")])
    assert code == 2 and "is a SYNTHETIC fedsynth cohort" in capsys.readouterr().err
    assert not (tmp_path / "advice").exists()
