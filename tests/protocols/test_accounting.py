"""Privacy accounting: the noise fixed before round 1, from the plan alone, keeps the whole
study (evaluation included) within ε; each claim is checked against its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols.count_tables import build_layout
from protocols.errors import PlanError
from protocols.generators import check_site_size, family_for
from protocols.generators.marginals.tables import (release_noise_multiplier, stages_epsilon,
                                                   table_counts)
from protocols.generators.vae.accounting import (MAX_NOISE_TO_SIGNAL, dpsgd_epsilon,
                                                 noise_multiplier_for, noise_to_signal)
from protocols.plan import StudyPlan
from protocols.privacy.accounting import (EPSILON_TOLERANCE, RDP_ORDERS, GaussianRelease,
                                          composed_epsilon, evaluation_release)
from protocols.privacy.dp_noise import discrete_gaussian_rho
from protocols.privacy.site_limits import MAX_SITE_RECORDS, MIN_SITE_RECORDS

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

GRID = (
    [(eps, q, 15, 10) for eps in (0.5, 1.0, 3.0, 10.0) for q in (0.01, 0.1, 0.8)]
    + [(eps, q, 4, 50) for eps in (0.5, 3.0) for q in (0.05, 0.8)]
    + [(eps, q, 1, 1) for eps in (0.5, 3.0) for q in (0.01, 0.8)]
)


def gaussian_epsilon(rdp_per_order: dict[float, float], delta: float) -> float:
    """The RDP → (ε, δ) conversion Opacus uses (Balle et al. 2020, Theorem 21):
    ε = min_α rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1)."""
    return min(rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
               for a, rdp in rdp_per_order.items())


@pytest.mark.parametrize(("epsilon", "q", "rounds", "local_steps"), GRID)
def test_noise_multiplier_keeps_the_whole_study_within_epsilon(
        epsilon: float, q: float, rounds: int, local_steps: int) -> None:
    plan = StudyPlan(epsilon=epsilon, rounds=rounds, local_steps=local_steps, sample_rate=q)
    spent = dpsgd_epsilon(plan, plan.total_steps)
    assert noise_multiplier_for(plan) > 0
    assert plan.epsilon - EPSILON_TOLERANCE <= spent <= plan.epsilon


@pytest.mark.parametrize("z", [0.7, 1.5, 4.0, 12.0])
def test_a_full_batch_gaussian_matches_the_closed_form(z: float) -> None:
    """Rényi DP of the Gaussian mechanism with sensitivity 1 is α/(2z²) (Mironov 2017,
    Proposition 7); the accountant's ε is that curve converted at δ."""
    closed = gaussian_epsilon({a: a / (2 * z * z) for a in RDP_ORDERS}, 1e-5)
    assert composed_epsilon([GaussianRelease(z)], 1e-5) == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize(("q", "z"), [(0.25, 1.0), (0.1, 2.0), (0.5, 6.6)])
@pytest.mark.parametrize("alpha", [2, 3, 5, 12])
def test_the_sampled_gaussian_matches_its_closed_form_at_integer_orders(q, z, alpha):
    """DP-SGD's step: the Poisson-subsampled Gaussian. For integer α its Rényi divergence
    is log(Σ_k C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2z²))) / (α−1) (Mironov, Talwar & Zhang
    2019, Section 3.3); the accountant's curve must be exactly that."""
    from opacus.accountants.analysis.rdp import compute_rdp

    closed = math.log(sum(math.comb(alpha, k) * (1 - q) ** (alpha - k) * q ** k
                          * math.exp((k * k - k) / (2 * z * z))
                          for k in range(alpha + 1))) / (alpha - 1)
    computed = float(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=[alpha])[0])
    assert computed == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize(("z1", "z2"), [(1.0, 1.0), (1.5, 4.0), (0.8, 9.0)])
def test_gaussian_releases_compose_by_adding_renyi_curves(z1: float, z2: float) -> None:
    """Two Gaussians compose to one of multiplier (z1⁻² + z2⁻²)^(-1/2) (RDP adds up)."""
    combined = (z1 ** -2 + z2 ** -2) ** -0.5
    assert composed_epsilon([GaussianRelease(z1), GaussianRelease(z2)], 1e-5) == pytest.approx(
        composed_epsilon([GaussianRelease(combined)], 1e-5), rel=1e-9)


@pytest.mark.parametrize("sigma", [0.9, 3.0, 17.5])
def test_the_discrete_gaussian_is_charged_like_the_continuous_one(sigma: float) -> None:
    """OpenDP states ρ = 1/(2σ²) for N_Z(0, σ²) on a sensitivity-1 integer query
    (Canonne, Kamath & Steinke 2020); zCDP ρ is RDP ρ·α (Bun & Steinke 2016), which is
    exactly the accountant's curve for a full-batch Gaussian of multiplier σ."""
    rho = discrete_gaussian_rho(sigma)
    assert rho == pytest.approx(1 / (2 * sigma ** 2), rel=1e-12)
    closed = gaussian_epsilon({a: rho * a for a in RDP_ORDERS}, 1e-5)
    assert composed_epsilon([GaussianRelease(sigma)], 1e-5) == pytest.approx(closed, rel=1e-9)


def test_no_release_costs_nothing_and_no_noise_costs_everything() -> None:
    assert composed_epsilon([], 1e-5) == 0.0
    assert composed_epsilon([GaussianRelease(1.0, 0.1, 0)], 1e-5) == 0.0
    assert composed_epsilon([GaussianRelease(0.0)], 1e-5) == math.inf


def test_the_non_private_reference_has_no_noise_and_no_bound() -> None:
    plan = StudyPlan(epsilon=math.inf)
    assert noise_multiplier_for(plan) == 0.0 and dpsgd_epsilon(plan, 10) == math.inf
    assert evaluation_release(plan) is None


def test_noise_grows_with_the_study_length() -> None:
    short = noise_multiplier_for(StudyPlan(rounds=2, local_steps=5))
    long = noise_multiplier_for(StudyPlan(rounds=20, local_steps=5))
    assert long > short


def test_epsilon_grows_with_steps_and_is_the_same_at_every_site() -> None:
    plan = StudyPlan(epsilon=2.0, rounds=4, local_steps=5)
    spent = [dpsgd_epsilon(plan, steps) for steps in (0, 5, 10, 15, 20)]
    assert spent[0] == 0.0 and spent == sorted(spent) and len(set(spent)) == 5
    assert spent[-1] <= plan.epsilon


def test_unreachable_epsilon_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="No noise level reaches epsilon 1e-06"):
        noise_multiplier_for(StudyPlan(epsilon=1e-6, rounds=30, local_steps=10))


@pytest.mark.parametrize("evaluation", [0.3, 1.0, 2.5])
def test_dpsgd_and_evaluation_together_stay_within_epsilon(evaluation: float) -> None:
    plan = StudyPlan(epsilon=3.0, rounds=5, local_steps=10, evaluation_epsilon=evaluation)
    alone = composed_epsilon([evaluation_release(plan)], plan.delta)
    assert evaluation - EPSILON_TOLERANCE <= alone <= evaluation
    total = dpsgd_epsilon(plan, plan.total_steps, evaluated=True)
    without = StudyPlan(epsilon=3.0, rounds=5, local_steps=10)
    assert noise_multiplier_for(plan) > noise_multiplier_for(without)
    assert plan.epsilon - EPSILON_TOLERANCE <= total <= plan.epsilon


@pytest.mark.parametrize("evaluation", [0.3, 1.0, 2.5])
def test_marginal_tables_and_evaluation_together_stay_within_epsilon(
        evaluation: float, demo_schema) -> None:
    plan = StudyPlan(epsilon=3.0, generator="marginals", rounds=2,
                     evaluation_epsilon=evaluation)
    alone = composed_epsilon([evaluation_release(plan)], plan.delta)
    assert evaluation - EPSILON_TOLERANCE <= alone <= evaluation
    layout = build_layout(demo_schema)
    total = stages_epsilon(layout, plan, 2, evaluated=True)
    counts = table_counts(layout)
    assert release_noise_multiplier(plan, *counts) > release_noise_multiplier(
        StudyPlan(generator="marginals", rounds=2), *counts)
    assert plan.epsilon - EPSILON_TOLERANCE <= total <= plan.epsilon


def test_the_minimum_site_is_where_noise_stops_outweighing_the_signal() -> None:
    plan = StudyPlan(epsilon=1.0, rounds=5)
    smallest = family_for(plan).minimum_site_records(plan)
    assert smallest >= MIN_SITE_RECORDS
    assert noise_to_signal(plan, smallest) <= MAX_NOISE_TO_SIGNAL
    assert noise_to_signal(plan, smallest - 1) > MAX_NOISE_TO_SIGNAL
    check_site_size(plan, smallest, "hospital-07.csv")
    with pytest.raises(PlanError) as info:
        check_site_size(plan, smallest - 1, "hospital-07.csv")
    assert str(info.value).startswith("hospital-07.csv: too small")
    assert f"at least {smallest} records per site" in str(info.value)


@pytest.mark.parametrize("plan", [StudyPlan(epsilon=math.inf),
                                  StudyPlan(generator="marginals", rounds=2)])
def test_only_the_floor_applies_to_references_and_marginals(plan: StudyPlan) -> None:
    assert family_for(plan).minimum_site_records(plan) == MIN_SITE_RECORDS
    check_site_size(plan, MIN_SITE_RECORDS, "hospital-07.csv")


def test_a_site_below_the_floor_is_refused_on_the_operators_side() -> None:
    with pytest.raises(PlanError, match="fewer than the 20 any study needs"):
        check_site_size(StudyPlan(generator="marginals", rounds=2), 19, "hospital-07.csv")


def test_a_plan_whose_delta_could_release_a_record_is_refused() -> None:
    with pytest.raises(PlanError, match=f"delta must be below 1/{MAX_SITE_RECORDS}"):
        StudyPlan(delta=1.0 / MAX_SITE_RECORDS)
    StudyPlan(delta=0.99 / MAX_SITE_RECORDS)
    StudyPlan(epsilon=math.inf, delta=0.5)  # no guarantee claimed, nothing to protect


def test_every_quantity_a_node_reports_comes_from_the_plan_alone() -> None:
    """The accounting functions take no record count: the signature is the guarantee."""
    import inspect
    for function in (noise_multiplier_for, dpsgd_epsilon, evaluation_release,
                     release_noise_multiplier, stages_epsilon):
        assert not {"n", "n_records", "records"} & set(inspect.signature(function).parameters)
    assert np.isclose(dpsgd_epsilon(StudyPlan(), 20), dpsgd_epsilon(StudyPlan(), 20))
