"""Tests for privacy accounting: the noise fixed before round 1 keeps the whole study within ε."""

from __future__ import annotations

import math

import pytest

from protocols.accounting import (
    MIN_SITE_RECORDS,
    check_delta,
    check_site_size,
    epsilon_spent,
    minimum_site_records,
    noise_multiplier_for,
    sample_rate_for,
    too_small_because,
)
from protocols.errors import PlanError
from protocols.plan import StudyPlan

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

GRID = (
    [(eps, q, 15, 10) for eps in (0.5, 1.0, 3.0, 10.0) for q in (0.01, 0.1, 0.8)]
    + [(eps, q, 4, 50) for eps in (0.5, 1.0, 3.0, 10.0) for q in (0.01, 0.1, 0.8)]
    + [(eps, q, 1, 1) for eps in (0.5, 3.0) for q in (0.01, 0.8)]
)


@pytest.mark.parametrize(("epsilon", "q", "rounds", "local_steps"), GRID)
def test_noise_multiplier_keeps_the_whole_study_within_epsilon(
        epsilon: float, q: float, rounds: int, local_steps: int) -> None:
    plan = StudyPlan(epsilon=epsilon, rounds=rounds, local_steps=local_steps)
    sigma = noise_multiplier_for(plan, q)
    spent = epsilon_spent(sigma, q, plan.total_steps, plan.delta)
    assert sigma > 0
    assert spent <= plan.epsilon
    # Not wastefully noisy: the budget is (almost) all used.
    assert spent >= 0.95 * plan.epsilon


def test_noise_multiplier_for_a_non_private_plan_is_zero() -> None:
    plan = StudyPlan(epsilon=math.inf)
    assert not plan.private
    assert noise_multiplier_for(plan, 0.1) == 0.0
    assert epsilon_spent(0.0, 0.1, plan.total_steps, plan.delta) == math.inf


def test_noise_multiplier_grows_with_the_study_length() -> None:
    short = noise_multiplier_for(StudyPlan(rounds=2, local_steps=5), 0.1)
    long = noise_multiplier_for(StudyPlan(rounds=20, local_steps=5), 0.1)
    assert long > short


def test_unreachable_epsilon_is_a_plan_error() -> None:
    plan = StudyPlan(epsilon=1e-6, rounds=30, local_steps=10)
    with pytest.raises(PlanError, match="No noise level reaches epsilon 1e-06"):
        noise_multiplier_for(plan, 0.8)


def test_epsilon_spent_grows_with_steps() -> None:
    spent = [epsilon_spent(1.0, 0.05, steps, 1e-5) for steps in (1, 10, 100, 1000)]
    assert spent == sorted(spent)
    assert len(set(spent)) == len(spent)


def test_epsilon_spent_falls_with_noise() -> None:
    spent = [epsilon_spent(sigma, 0.05, 100, 1e-5) for sigma in (0.6, 1.0, 2.0, 5.0)]
    assert spent == sorted(spent, reverse=True)
    assert len(set(spent)) == len(spent)


def test_epsilon_spent_of_no_steps_is_zero() -> None:
    assert epsilon_spent(1.0, 0.1, 0, 1e-5) == 0.0
    assert epsilon_spent(0.0, 0.1, 0, 1e-5) == 0.0


@pytest.mark.parametrize(("n", "batch", "rate"),
                         [(1000, 32, 0.032), (32, 32, 1.0), (10, 32, 1.0), (400, 1, 0.0025)])
def test_sample_rate_gives_the_batch_size_on_average(n: int, batch: int, rate: float) -> None:
    assert sample_rate_for(n, batch) == pytest.approx(rate)


@pytest.mark.parametrize(("delta", "n"), [(1e-3, 1000), (0.5, 2), (1e-2, 200), (1.0, 1)])
def test_check_delta_refuses_delta_not_below_one_over_n(delta: float, n: int) -> None:
    with pytest.raises(PlanError) as info:
        check_delta(delta, n, "hospital-07.csv")
    message = str(info.value)
    assert message.startswith("hospital-07.csv:")
    assert f"1/{n}" in message


@pytest.mark.parametrize(("delta", "n"), [(1e-5, 1000), (0.4, 2), (9.9e-4, 1000), (1e-5, 40)])
def test_check_delta_accepts_delta_below_one_over_n(delta: float, n: int) -> None:
    check_delta(delta, n, "hospital-07.csv")


@pytest.mark.parametrize("plan", [StudyPlan(), StudyPlan(epsilon=1.0, rounds=5, batch_size=16),
                                  StudyPlan(epsilon=0.5, local_steps=10)])
def test_the_documented_minimum_is_exactly_where_refusal_stops(plan: StudyPlan) -> None:
    smallest = minimum_site_records(plan)
    assert smallest is not None and smallest >= MIN_SITE_RECORDS
    assert too_small_because(plan, smallest) is None
    assert too_small_because(plan, smallest - 1) is not None


def test_a_site_below_the_minimum_is_refused_naming_the_minimum() -> None:
    plan = StudyPlan(epsilon=1.0, rounds=5, batch_size=16)
    smallest = minimum_site_records(plan)
    with pytest.raises(PlanError) as info:
        check_site_size(plan, smallest - 1, "hospital-07.csv")
    message = str(info.value)
    assert message.startswith("hospital-07.csv: too small")
    assert f"at least {smallest} records per site" in message


def test_a_site_too_large_for_delta_is_refused() -> None:
    with pytest.raises(PlanError, match="not below 1/n = 1/100000"):
        check_site_size(StudyPlan(delta=1e-5), 100_000, "registry.csv")


@pytest.mark.parametrize("plan, n", [(StudyPlan(epsilon=math.inf), 3),
                                     (StudyPlan(generator="marginals", rounds=2), MIN_SITE_RECORDS)])
def test_no_size_rule_beyond_the_floor_for_references_and_marginals(plan: StudyPlan,
                                                                    n: int) -> None:
    check_site_size(plan, n, "hospital-07.csv")


def test_a_minimum_beyond_what_delta_allows_is_called_a_contradiction() -> None:
    with pytest.raises(PlanError, match="No site size suits this plan: its noise needs at "
                                        r"least \d+ records per site, and its delta 0.01"):
        check_site_size(StudyPlan(epsilon=0.2, delta=1e-2), 30, "hospital-07.csv")
