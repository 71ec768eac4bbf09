"""Tests for the study plan: defaults, refusals, the config round trip, the Flower defaults."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
from flwr.supercore.constant import DEFAULT_SIMULATION_CONFIG

from protocols.errors import PlanError
from protocols.plan import StudyPlan, check_issued
from protocols.plan_defaults import default_plan

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_default_plan_is_valid_and_private() -> None:
    plan = StudyPlan()
    assert plan.private
    assert plan.total_steps == plan.rounds * plan.local_steps


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"epsilon": 0.0}, "epsilon must be positive"),
        ({"epsilon": -1.0}, "epsilon must be positive"),
        ({"epsilon": -math.inf}, "epsilon must be positive"),
        ({"epsilon": math.nan}, "epsilon must be positive"),
        ({"delta": 0.0}, "delta must lie strictly between 0 and 1"),
        ({"delta": 1.0}, "delta must lie strictly between 0 and 1"),
        ({"delta": 2.0}, "delta must lie strictly between 0 and 1"),
        ({"delta": math.nan}, "delta must lie strictly between 0 and 1"),
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"local_steps": 0}, "local-steps must be at least 1"),
        ({"sample_rate": 0.0}, "sample-rate must lie in"),
        ({"sample_rate": 1.5}, "sample-rate must lie in"),
        ({"evaluation_epsilon": -0.1}, "evaluation-epsilon must be 0"),
        ({"evaluation_epsilon": 3.0}, "evaluation-epsilon is part of epsilon"),
        ({"learning_rate": 0.0}, "learning-rate must be positive"),
        ({"max_grad_norm": -1.0}, "max-grad-norm must be positive"),
        ({"hidden": 3}, "hidden must be >= 4"),
        ({"latent": 0}, "latent >= 1"),
        ({"rows": 0}, "rows must be at least 1"),
        ({"min_sites": 0}, "min-sites must be at least 1"),
        ({"study_nonce": "ab" * 8}, "study-nonce must be 32 lowercase hexadecimal digits"),
        ({"study_nonce": "AB" * 16}, "study-nonce must be 32 lowercase hexadecimal digits"),
        ({"study_nonce": "zz" * 16}, "study-nonce must be 32 lowercase hexadecimal digits"),
    ],
)
def test_invalid_plan_is_refused_naming_the_rule(changes: dict, rule: str) -> None:
    with pytest.raises(PlanError, match=rule):
        StudyPlan(**changes)
    with pytest.raises(PlanError, match=rule):
        StudyPlan().with_overrides(**changes)
    with pytest.raises(PlanError, match=rule):
        StudyPlan.from_config({k.replace("_", "-"): v for k, v in changes.items()})


def test_plan_round_trips_through_its_config() -> None:
    plan = StudyPlan(epsilon=1.5, delta=1e-6, rounds=3, local_steps=7, sample_rate=0.1,
                     learning_rate=1e-3, max_grad_norm=0.5, hidden=64, latent=8, rows=50,
                     seed=42, min_sites=3, evaluation_epsilon=0.25)
    config = plan.to_config()
    assert set(config) == {f.name.replace("_", "-") for f in dataclasses.fields(StudyPlan)}
    assert StudyPlan.from_config(config) == plan
    underscored = {k.replace("-", "_"): v for k, v in config.items()}
    assert StudyPlan.from_config(underscored) == plan


def test_from_config_coerces_text_and_whole_floats() -> None:
    plan = StudyPlan.from_config({"rounds": "3", "epsilon": "0.5", "delta": "1e-6",
                                  "local-steps": 4.0, "sample-rate": " 0.5 ", "seed": "-1"})
    assert (plan.rounds, plan.epsilon, plan.delta, plan.local_steps, plan.sample_rate,
            plan.seed) == (3, 0.5, 1e-6, 4, 0.5, -1)
    assert isinstance(plan.rounds, int) and isinstance(plan.local_steps, int)
    assert isinstance(plan.epsilon, float)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [({"rounds": "three"}, "rounds = 'three' is not a valid int"),
     ({"rounds": 2.5}, "rounds = 2.5 is not a valid int"),
     ({"local-steps": None}, "local-steps = None is not a valid int"),
     ({"epsilon": "lots"}, "epsilon = 'lots' is not a valid float")],
)
def test_from_config_refuses_values_of_the_wrong_kind(config: dict, fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment):
        StudyPlan.from_config(config)


def test_from_config_ignores_keys_that_are_not_plan_settings() -> None:
    assert StudyPlan.from_config({"schema-path": "s.yaml", "engine": "simulation",
                                  "schema-sha256": "ab"}) == StudyPlan()


@pytest.mark.parametrize("epsilon", [math.inf, "inf"])
def test_infinite_epsilon_plan_is_non_private(epsilon: object) -> None:
    plan = StudyPlan.from_config({"epsilon": epsilon})
    assert not plan.private
    assert plan.epsilon == math.inf


def test_with_overrides_ignores_none() -> None:
    assert StudyPlan().with_overrides(rounds=None, epsilon=1.0) == StudyPlan(epsilon=1.0)


def test_flower_app_config_holds_the_default_plan_of_flowers_local_federation() -> None:
    """`flwr run .` offers what `demo` and `simulate` offer for as many sites as Flower's
    local simulation federation has SuperNodes (the TOML must write the numbers out)."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["flwr"]["app"]["config"]
    expected, _ = default_plan(DEFAULT_SIMULATION_CONFIG.num_supernodes)
    for field in dataclasses.fields(StudyPlan):
        if field.name == "study_nonce":
            continue  # no setting: the coordinator draws it when a study starts
        key = field.name.replace("_", "-")
        assert key in config, f"[tool.flwr.app.config] lacks plan key {key}"
        assert config[key] == getattr(expected, field.name), (key, config[key])
        assert type(config[key]) is type(field.default), (key, config[key])
    assert StudyPlan.from_config(config) == expected


def test_every_issued_plan_is_a_study_of_its_own():
    """Two consortia, or one re-running an identical plan, start two studies: the
    coordinator's fresh nonce makes each study's id its own, and a node that reads the
    plan back from the message derives the same id."""
    plan = StudyPlan(epsilon=2.0, rounds=2)
    first, second = plan.issued(), plan.issued()
    assert first.study_nonce != second.study_nonce and len(first.study_nonce) == 32
    assert dataclasses.replace(first, study_nonce="") == plan == dataclasses.replace(
        second, study_nonce="")
    assert first.fingerprint("ab" * 32) != second.fingerprint("ab" * 32)
    assert StudyPlan.from_config(first.to_config()).fingerprint("ab" * 32) == \
        first.fingerprint("ab" * 32)
    check_issued(first)


def test_a_plan_that_names_no_study_is_refused_as_invalid():
    with pytest.raises(PlanError, match="Study plan is invalid: study-nonce is missing"):
        check_issued(StudyPlan.from_config({"epsilon": 2.0}))


def test_a_plan_built_with_whole_numbers_is_the_same_study_as_its_config():
    """3 and 3.0 are one epsilon: the fingerprint that names the study at every node
    must not depend on how the plan was typed."""
    typed = StudyPlan(epsilon=3, delta=1e-5, evaluation_epsilon=1)
    assert typed == StudyPlan(epsilon=3.0, evaluation_epsilon=1.0)
    assert isinstance(typed.epsilon, float)
    assert typed.fingerprint("ab" * 32) == StudyPlan.from_config(
        typed.to_config()).fingerprint("ab" * 32)
