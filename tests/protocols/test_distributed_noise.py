"""Distributed discrete Gaussian noise: every sum the plan allows holds the central variance,
the accountant is Kairouz, Liu & Steinke's Proposition 14 to the digit, and the integer path
never rounds."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import PlanError
from protocols.privacy.accounting import (EPSILON_TOLERANCE, RDP_ORDERS, GaussianRelease,
                                          calibrate, composed_epsilon, epsilon_from_rdp)
from protocols.privacy.distributed_noise import (CountSensitivity, calibrate_share_sigma,
                                                 distributed_epsilon,
                                                 exposed_share_epsilon, honest_shares,
                                                 noisy_share, release_rdp, share_variance,
                                                 sum_of_shares_renyi, tau)

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

DELTA = 1e-5


def central_epsilon(total_sigma: float, l2: float = 1.0) -> float:
    """One central N_Z(0, σ²) on a query of L2 sensitivity l2, as accounting.py charges it."""
    return composed_epsilon([GaussianRelease(total_sigma / l2)], DELTA)


def honest_variance(share: float, survivors: tuple[int, ...], colluding: tuple[int, ...]
                    ) -> Fraction:
    return sum((Fraction(share) for site in survivors if site not in colluding), Fraction(0))


# --- sizing the share -------------------------------------------------------------------

@pytest.mark.parametrize("central", [1.0, 7.3, 1e-3, 12345.678, 0.1])
def test_every_allowed_survivor_set_holds_the_central_variance(central: float) -> None:
    """Exhaustively, up to 5 sites: every set of ≥ min_survivors repliers, every set of up to
    `colluders` of them subtracting their own share, leaves ≥ the central variance, exactly."""
    for sites in range(1, 6):
        for min_survivors in range(1, sites + 1):
            for colluders in range(min_survivors):
                share = share_variance(central, min_survivors, colluders)
                for size in range(min_survivors, sites + 1):
                    for survivors in itertools.combinations(range(sites), size):
                        for bad in range(colluders + 1):
                            for colluding in itertools.combinations(survivors, bad):
                                assert honest_variance(share, survivors, colluding) >= central


@settings(max_examples=300, deadline=None)
@given(central=st.floats(1e-9, 1e12), min_survivors=st.integers(1, 200),
       colluder_fraction=st.floats(0, 1, exclude_max=True), extra=st.integers(0, 60),
       data=st.data())
def test_share_variance_covers_the_central_variance_over_ranges(
        central: float, min_survivors: int, colluder_fraction: float, extra: int,
        data: st.DataObject) -> None:
    colluders = int(colluder_fraction * min_survivors)
    share = share_variance(central, min_survivors, colluders)
    colluding_now = data.draw(st.integers(0, colluders))
    honest = min_survivors + extra - colluding_now
    assert Fraction(share) * honest >= Fraction(central)
    # ...and not wastefully: the exact quotient, or the next float up.
    assert share <= math.nextafter(central / (min_survivors - colluders), math.inf)


def test_share_is_the_central_variance_over_the_honest_sites() -> None:
    assert honest_shares(5, 1) == 4
    assert share_variance(9.0, 5, 1) == 2.25
    assert share_variance(9.0, 1, 0) == 9.0
    assert share_variance(0.0, 3, 2) == 0.0


@pytest.mark.parametrize(("min_survivors", "colluders"), [(3, 3), (2, 5), (1, 1)])
def test_colluders_who_could_be_every_survivor_are_a_plan_error(
        min_survivors: int, colluders: int) -> None:
    with pytest.raises(PlanError, match=f"tolerates {colluders} colluding site"):
        share_variance(1.0, min_survivors, colluders)
    with pytest.raises(PlanError, match="no honest"):
        calibrate_share_sigma(3.0, DELTA, min_survivors, colluders)


def test_a_plan_without_survivors_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="at least one surviving site"):
        honest_shares(0, 0)


# --- the accountant against Proposition 14 ------------------------------------------------

def test_tau_is_the_closed_form() -> None:
    assert tau(1.0, 1) == 0.0
    assert tau(1.0, 2) == pytest.approx(10 * math.exp(-math.pi ** 2), rel=1e-15)
    assert tau(1.0, 2) == pytest.approx(5.172318620381233e-4, rel=1e-12)
    by_hand = 10 * sum(math.exp(-2 * math.pi ** 2 * 0.64 * k / (k + 1)) for k in (1, 2, 3))
    assert tau(0.8, 4) == pytest.approx(by_hand, rel=1e-14)


def test_proposition_14_where_its_additive_term_wins() -> None:
    """α = 2, two shares of σ = 1, Δ = (1): τ = 10e^{−π²};
    min{2/4 + τ, (1/2 + √2τ + τ²), (1/√2 + τ)²} = 1/2 + τ = 0.500517231862038."""
    t = 10 * math.exp(-math.pi ** 2)
    terms = [0.5 + t, 0.5 + math.sqrt(2) * t + t * t, (1 / math.sqrt(2) + t) ** 2]
    assert min(terms) == terms[0]
    got = sum_of_shares_renyi(2.0, 2, 1.0, 1.0, 1.0, 1)
    assert got == pytest.approx(terms[0], rel=1e-14)
    assert got == pytest.approx(0.500517231862038, rel=1e-12)


def test_proposition_14_where_its_l1_term_wins() -> None:
    """α = 1.2, four shares of σ = 1, Δ = (2, 1): ‖Δ‖₂ = √5, ‖Δ‖₁ = 3, d = 2."""
    alpha, n, sigma, l2, l1, d = 1.2, 4, 1.0, math.sqrt(5), 3.0, 2
    t = 10 * sum(math.exp(-2 * math.pi ** 2 * sigma ** 2 * k / (k + 1)) for k in range(1, n))
    nv = n * sigma ** 2
    terms = [alpha * l2 ** 2 / (2 * nv) + t * d,
             alpha / 2 * (l2 ** 2 / nv + 2 * t * l1 / math.sqrt(nv) + t ** 2 * d),
             alpha / 2 * (l2 / math.sqrt(nv) + t * math.sqrt(d)) ** 2]
    assert min(terms) == terms[1] < terms[2]
    assert sum_of_shares_renyi(alpha, n, sigma, l2, l1, d) == pytest.approx(terms[1], rel=1e-13)


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 4.0])
@pytest.mark.parametrize("l2", [1.0, math.sqrt(3)])
def test_one_share_is_the_discrete_gaussian_accounting_already_charges(sigma, l2) -> None:
    """τ = 0: the curve is α l2²/(2σ²) (CKS20), converted exactly as composed_epsilon does."""
    sensitivity = CountSensitivity(l2)
    curve = release_rdp(sigma, 1, sensitivity)
    assert curve == pytest.approx([a * l2 ** 2 / (2 * sigma ** 2) for a in RDP_ORDERS],
                                  rel=1e-14)
    assert exposed_share_epsilon(sigma, DELTA, sensitivity) == pytest.approx(
        central_epsilon(sigma, l2), rel=1e-12)


def test_the_release_curve_is_the_least_bound_over_its_honest_shares() -> None:
    """Post-processing: n' ≤ m shares already bound the sum of m. With σ = 1/2 and 20 shares
    the τ of all 20 is large, and fewer shares give the tighter bound at some orders."""
    sensitivity = CountSensitivity()
    curve = release_rdp(0.5, 20, sensitivity)
    for order, value in zip(RDP_ORDERS, curve):
        bounds = [float(sum_of_shares_renyi(order, n, 0.5, 1.0, 1.0, 1)) for n in range(1, 21)]
        assert value == min(bounds)
    all_twenty = [float(sum_of_shares_renyi(a, 20, 0.5, 1.0, 1.0, 1)) for a in RDP_ORDERS]
    assert any(v < w for v, w in zip(curve, all_twenty))


def test_below_half_only_a_single_share_is_counted() -> None:
    assert release_rdp(0.45, 10) == release_rdp(0.45, 1)
    with pytest.raises(ValueError, match="σ ≥ 1/2"):
        sum_of_shares_renyi(2.0, 2, 0.45, 1.0, 1.0, 1)


def test_the_support_of_an_integer_move_bounds_its_dimension() -> None:
    assert CountSensitivity().support == 1
    assert CountSensitivity(math.sqrt(3), 3).support == 3
    assert CountSensitivity(math.sqrt(3)).support == 3  # l2² in floats is 2.9999999999999996
    assert CountSensitivity(math.sqrt(5), 3).l1_bound == 3
    assert CountSensitivity(2.0, 100.0).l1_bound == 4.0  # |Δ_j| ≤ Δ_j² for integers
    with pytest.raises(ValueError):
        CountSensitivity(0.5)
    with pytest.raises(ValueError):
        CountSensitivity(2.0, 1.5)


@pytest.mark.parametrize("shares", [2, 4, 20])
@pytest.mark.parametrize("l2", [1.0, math.sqrt(10)])
def test_the_sum_is_never_cheaper_than_central_noise_and_meets_it_as_sigma_grows(shares, l2):
    sensitivity = CountSensitivity(l2, l2 * l2)
    gaps = []
    for sigma in (0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 4.0):
        sigma_l2 = sigma * l2  # the same noise-to-sensitivity ratio for both sensitivities
        central = central_epsilon(math.sqrt(shares) * sigma_l2, l2)
        summed = distributed_epsilon(sigma_l2, shares, DELTA, sensitivity)
        assert summed >= central * (1 - 1e-12)
        gaps.append(summed - central)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[-1] <= 1e-12 * central_epsilon(math.sqrt(shares) * 4.0 * l2, l2)


def test_pinned_epsilons_of_four_honest_shares() -> None:
    """Δ = 1, δ = 1e-5, four honest shares: σ = 1 gives 2.16626 against the central 2.16572
    (√4·1 = 2) and 4.72851 for one exposed share; σ = 2 matches central to the digit."""
    assert distributed_epsilon(1.0, 4, DELTA) == pytest.approx(2.166255882, rel=1e-8)
    assert central_epsilon(2.0) == pytest.approx(2.165715659, rel=1e-8)
    assert exposed_share_epsilon(1.0, DELTA) == pytest.approx(4.728507067, rel=1e-8)
    assert distributed_epsilon(2.0, 4, DELTA) == pytest.approx(central_epsilon(4.0), rel=1e-12)


@pytest.mark.parametrize("shares", [2, 4, 20, 63])
def test_a_single_exposed_share_is_worth_less_than_the_secure_sum(shares: int) -> None:
    for sigma in (0.5, 0.6, 0.8, 1.0, 2.0, 5.0):
        assert exposed_share_epsilon(sigma, DELTA) > distributed_epsilon(sigma, shares, DELTA)
    for sigma in (0.2, 0.45):
        assert exposed_share_epsilon(sigma, DELTA) == distributed_epsilon(sigma, shares, DELTA)


def test_curves_of_several_releases_add_before_converting() -> None:
    """Two releases of σ = 3 cost what one of σ = 3/√2 does (τ < 1e-38 at both)."""
    one = release_rdp(3.0, 4)
    two = [2 * v for v in one]
    assert epsilon_from_rdp(two, DELTA) > epsilon_from_rdp(one, DELTA)
    assert epsilon_from_rdp(two, DELTA) == pytest.approx(
        distributed_epsilon(3.0 / math.sqrt(2), 4, DELTA), rel=1e-12)


# --- calibration ------------------------------------------------------------------------

CALIBRATION = [(eps, survivors, colluders, l2)
               for eps in (0.5, 1.0, 3.0)
               for survivors, colluders in ((1, 0), (3, 1), (6, 2), (20, 0), (63, 0))
               for l2 in (1.0, math.sqrt(10))] + [(10.0, 1, 0, 1.0), (10.0, 6, 2, math.sqrt(10))]


@pytest.mark.parametrize(("epsilon", "min_survivors", "colluders", "l2"), CALIBRATION)
def test_calibration_lands_just_below_the_target(epsilon, min_survivors, colluders, l2):
    sensitivity = CountSensitivity(l2, l2 * l2)
    sigma = calibrate_share_sigma(epsilon, DELTA, min_survivors, colluders, sensitivity)
    shares = min_survivors - colluders
    spent = distributed_epsilon(sigma, shares, DELTA, sensitivity)
    assert epsilon - EPSILON_TOLERANCE <= spent <= epsilon
    assert distributed_epsilon(sigma * 0.98, shares, DELTA, sensitivity) > epsilon


@pytest.mark.parametrize("epsilon", [0.5, 1.0])
def test_where_tau_is_negligible_the_share_is_the_central_noise_split(epsilon: float) -> None:
    """Six sites, two colluders: four honest shares of the central σ²/4 each, the central σ
    being what accounting.calibrate gives one Gaussian release. (At ε = 3 the shares are
    σ ≈ 0.76, τ ≈ 0.01 shows, and the share needs 2.6 % more variance than the split.)"""
    central = calibrate(lambda z: [GaussianRelease(z)], epsilon, DELTA, "central")
    sigma = calibrate_share_sigma(epsilon, DELTA, 6, 2)
    assert sigma ** 2 == pytest.approx(share_variance(central ** 2, 6, 2), rel=0.02)


def test_a_target_inside_the_step_at_half_gets_sigma_one_half() -> None:
    """Below σ = 1/2 only one share counts (ε > 10); at 1/2 twenty shares give 5.10."""
    sigma = calibrate_share_sigma(10.0, DELTA, 20, 0)
    assert sigma == 0.5
    assert distributed_epsilon(sigma, 20, DELTA) == pytest.approx(5.10201, rel=1e-5)
    assert distributed_epsilon(0.4999, 20, DELTA) > 10.0


def test_the_non_private_reference_has_no_share() -> None:
    assert calibrate_share_sigma(math.inf, DELTA, 3, 1) == 0.0
    assert distributed_epsilon(0.0, 3, DELTA) == math.inf


# --- the integer path -------------------------------------------------------------------

def test_a_noisy_share_is_int64_and_never_rounds_the_counts() -> None:
    """Counts beyond 2^53 would lose their last bit in a float. With σ = 0.05 the share is 0
    on every cell except with probability ~e^-200, so the counts must come back exact."""
    counts = np.array([2 ** 53 + 1, 2 ** 62 + 7, 3, 0], dtype=np.int64)
    noisy = noisy_share(counts, 0.05)
    assert noisy.dtype == np.int64
    assert noisy.tolist() == [2 ** 53 + 1, 2 ** 62 + 7, 3, 0]
    assert noisy_share(counts, 0.0).tolist() == counts.tolist()
    small = noisy_share(np.array([[1, 2], [3, 4]], dtype=np.int32), 2.0)
    assert small.dtype == np.int64 and small.shape == (2, 2)


@pytest.mark.parametrize("counts", [np.array([1.0, 2.0]), np.array([True, False]),
                                    np.array(["1"])])
def test_a_noisy_share_refuses_anything_but_integers(counts: np.ndarray) -> None:
    with pytest.raises(ValueError, match="integer counts"):
        noisy_share(counts, 1.0)


def test_shares_sum_exactly_in_integers_and_modulo_a_field() -> None:
    """Five sites' counts + shares: the int64 sum is the exact integer sum, and a sum modulo
    2^32 (a SecAgg+ field), read back as a signed integer, is the same."""
    counts = [np.arange(200, dtype=np.int64) * (site + 1) % 37 for site in range(5)]
    noisy = [noisy_share(c, 3.0) for c in counts]
    total = np.sum(noisy, axis=0)
    assert total.dtype == np.int64
    assert total.tolist() == [sum(int(v[i]) for v in noisy) for i in range(200)]
    field = 2 ** 32
    masked = sum((v % field for v in noisy), np.zeros(200, dtype=np.int64)) % field
    signed = np.where(masked >= field // 2, masked - field, masked)
    assert np.array_equal(signed, total)
    assert np.array_equal(total - np.sum(counts, axis=0),
                          np.sum([n - c for n, c in zip(noisy, counts)], axis=0))


def _discrete_gaussian_variance(sigma: float) -> float:
    """Var N_Z(0, σ²) by direct summation of its mass (slightly below σ², CKS20)."""
    xs = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11, dtype=np.float64)
    weights = np.exp(-xs ** 2 / (2 * sigma ** 2))
    return float(np.sum(xs ** 2 * weights) / np.sum(weights))


def test_the_sum_of_sampled_shares_carries_the_central_variance() -> None:
    """Central variance 9, five survivors, one colluder: four shares of σ² = 2.25. The sample
    variance of their sum over 20,000 cells has standard error ≈ v·√(2/(N−1)) (the sum is
    near-Gaussian, kurtosis 3); six standard errors leave a flake rate of ~1e-9."""
    sigma = math.sqrt(share_variance(9.0, 5, 1))
    cells, shares = 20_000, 4
    total = sum(noisy_share(np.zeros(cells, dtype=np.int64), sigma) for _ in range(shares))
    expected = shares * _discrete_gaussian_variance(sigma)
    assert expected == pytest.approx(9.0, rel=1e-12)
    margin = 6 * expected * math.sqrt(2 / (cells - 1))
    assert abs(float(np.var(total, ddof=1)) - expected) < margin
    assert abs(float(np.mean(total))) < 6 * math.sqrt(expected / cells)
