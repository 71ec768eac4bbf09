"""The manifest's privacy statement: one plain sentence, and nothing a site's records decide."""

from __future__ import annotations

import html
import math

import pytest

from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.release.manifest import (NEIGHBOURING, SitePrivacySpent, StudyRun,
                                        build_manifest, privacy_sentence)


@pytest.mark.parametrize("plan", [
    StudyPlan(epsilon=3.0, delta=1e-5),
    StudyPlan(epsilon=1.5, delta=1e-6, evaluation_epsilon=0.5),
    StudyPlan(epsilon=2.0, generator="marginals", rounds=2, secure_aggregation=True),
])
def test_the_statement_names_relation_mechanism_epsilon_delta_and_trust(plan):
    sentence = privacy_sentence(plan)
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert f"({plan.epsilon:g}, {plan.delta:g})-differential privacy" in sentence
    assert "adding or removing one patient's record at that hospital" in sentence
    assert family_for(plan).mechanism in sentence
    assert "trusting only that each hospital runs its own installed fedsynth node" in sentence
    assert ("evaluation release" in sentence) == plan.evaluated
    assert ("SecAgg+" in sentence) == plan.secure_aggregation


def test_shares_of_the_noise_state_the_guarantee_and_what_it_rests_on(demo_schema):
    """Behind SecAgg+ the marginals family's sites add shares of the noise: the statement
    names the honest sites every sum holds, the colluders tolerated, and the weaker ε one
    site's tables would give if secure aggregation failed."""
    plan = StudyPlan(epsilon=3.0, generator="marginals", rounds=2, secure_aggregation=True,
                     min_sites=6, colluders=1)
    exposed = family_for(plan).exposed_epsilon(plan, demo_schema)
    sentence = privacy_sentence(plan, exposed)
    assert "(3, 1e-05)-differential privacy" in sentence
    assert "at least 5 hospitals' shares are honest (at most 1 colluding with it)" in sentence
    assert f"({exposed:.3g}, 1e-05)-differential privacy only" in sentence
    assert family_for(plan.with_overrides(secure_aggregation=False)).exposed_epsilon(
        plan.with_overrides(secure_aggregation=False), demo_schema) is None


def test_a_reference_without_dp_says_it_has_no_guarantee():
    assert "no privacy guarantee" in privacy_sentence(StudyPlan(epsilon=math.inf))


def test_what_the_manifest_says_per_site_comes_from_the_plan_and_the_rounds(tmp_path):
    (tmp_path / "synthetic.csv").write_text("a\n1\n")
    plan = StudyPlan(epsilon=2.0, rounds=2, local_steps=3, evaluation_epsilon=0.4)
    spent = SitePrivacySpent(1.9, 6)
    manifest = build_manifest(schema_sha256="ab" * 32, plan=plan,
                              sites={"a": spent, "b": spent},
                              contributions={"a": [1, 2], "b": [1, 2]}, engine="simulation",
                              tls=False, files={"synthetic.csv": tmp_path / "synthetic.csv"},
                              rows=1)
    privacy = manifest["privacy"]
    assert privacy["neighbouring"] == NEIGHBOURING and privacy["site_sizes_disclosed"] == "no"
    assert privacy["statement"] == privacy_sentence(plan)
    assert privacy["evaluation_epsilon"] == 0.4
    assert privacy["sites"]["a"] == privacy["sites"]["b"]
    assert manifest["study"] == plan.fingerprint("ab" * 32)


def test_the_manifest_records_the_flower_run_and_the_app_bundle_it_ran(tmp_path):
    """Flower's run ids are 64-bit: written as text, as Flower's own CLI does, so that no
    JSON reader rounds them; no run given (or no bundle): null, never a guess."""
    (tmp_path / "synthetic.csv").write_text("a\n1\n")
    common = dict(schema_sha256="ab" * 32, plan=StudyPlan(epsilon=2.0).issued(), sites={},
                  contributions={}, engine="deployment", tls=True,
                  files={"synthetic.csv": tmp_path / "synthetic.csv"}, rows=1)
    manifest = build_manifest(**common, run=StudyRun(2**63 + 5, "cd" * 32))
    assert (manifest["flower_run_id"], manifest["app_sha256"]) == (str(2**63 + 5), "cd" * 32)
    simulated = build_manifest(**common, run=StudyRun(7, None))
    assert (simulated["flower_run_id"], simulated["app_sha256"]) == ("7", None)
    unknown = build_manifest(**common)
    assert (unknown["flower_run_id"], unknown["app_sha256"]) == (None, None)


@pytest.mark.parametrize("plan", [StudyPlan(epsilon=2.0, rounds=2),
                                  StudyPlan(epsilon=2.0, generator="marginals", rounds=2)])
def test_the_manifest_and_the_report_say_how_the_cohort_was_made(plan, tmp_path):
    from protocols.evaluation import privacy_statement
    from protocols.evaluation.report.html import _privacy_statement

    (tmp_path / "synthetic.csv").write_text("a\n1\n")
    manifest = build_manifest(schema_sha256="ab" * 32, plan=plan,
                              sites={"a": SitePrivacySpent(1.9, 2)}, contributions={"a": [1, 2]},
                              engine="simulation", tls=False,
                              files={"synthetic.csv": tmp_path / "synthetic.csv"}, rows=1)
    said = family_for(plan).cohort_model
    assert manifest["privacy"]["cohort_model"] == said
    page = _privacy_statement({"privacy_statement": privacy_statement(manifest)})
    assert f"How the cohort was made: {html.escape(said)}" in page and "post-processing" in page
