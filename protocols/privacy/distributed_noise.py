"""Distributed discrete Gaussian noise: each site adds a share, the secure sum carries the rest.

What. Every site adds to its integer counts its own share of discrete Gaussian noise,
N_Z(0, σ²) on every cell, drawn from the CSPRNG (`noisy_share`); SecAgg+ sums the sites'
vectors over integers modulo a field, and the coordinator sees only the noisy sum. This
module sizes the share (`share_variance`, `calibrate_share_sigma`) and states what the sum
is worth (`distributed_epsilon`) and what one site's release is worth if its share is
exposed (`exposed_share_epsilon`).

Why. When every site noises its own statistics for a coordinator that sees each of them,
the sum over K sites carries √K times the noise of one central release (issue 15). Behind
secure aggregation each site needs only a share of the central noise.

Trust model. The guarantee holds for a record at an honest site when:
- every honest site runs its installed fedsynth code, draws a fresh share for every release
  from the operating system's CSPRNG and never reveals or reuses it;
- the coordinator runs SecAgg+ as specified (`protocols.privacy.secure_aggregation`): it
  learns the sum of the surviving sites' vectors and nothing else about any one of them;
- at least `min_survivors` sites' vectors are in every sum, and a round with fewer releases
  nothing; the sites themselves must enforce this, never on the coordinator's word;
- at most `colluders` of the survivors side with the coordinator and hand it their own counts
  and shares, which it subtracts; they stay below SecAgg+'s reconstruction threshold, so
  together they cannot unmask an honest site;
- the record's own site is honest (no DP guarantee survives a site leaking its own patients).
Every released sum then holds at least m = min_survivors − colluders honest shares,
independent of all the coordinator knows; further honest shares only add independent noise
(post-processing), so m is the worst case. If secure aggregation fails (a bug, or colluders at
the threshold), the coordinator sees one site's counts plus its share alone: a discrete
Gaussian of σ_share, the weaker `exposed_share_epsilon`.

Guarantee. A sum of discrete Gaussians is not a discrete Gaussian. Kairouz, Liu & Steinke,
"The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation"
(ICML 2021; arXiv:2102.06387, Proposition 14; its Theorem 1 adds the rounding of real inputs,
which counts do not need; transcribed as in the authors' own accountant,
google-research/federated distributed_dp/accounting_utils.py):
for σ ≥ 1/2, Z the sum of n independent N_Z(0, σ²)^d shares, every Δ ∈ Z^d and α ≥ 1,
    D_α(Z ‖ Z + Δ) ≤ min{ α‖Δ‖₂²/(2nσ²) + τd,
                          α/2 · (‖Δ‖₂²/(nσ²) + 2τ‖Δ‖₁/(√n σ) + τ²d),
                          α/2 · (‖Δ‖₂/(√n σ) + τ√d)² },
    τ = 10 · Σ_{k=1}^{n−1} exp(−2π²σ² · k/(k+1)).
(−Δ has the same norms, so the bound holds in both directions.) With one share τ = 0 and it
is the discrete Gaussian's α‖Δ‖₂²/(2σ²) (Canonne, Kamath & Steinke, NeurIPS 2020), which
`protocols.privacy.accounting` charges; as σ grows τ vanishes and the sum is charged like
one central N_Z(0, nσ²). Three applications, each an inequality, never an approximation:
- Δ is an integer vector, so ‖Δ‖₁ ≤ ‖Δ‖₂² and at most ‖Δ‖₁ cells move; the others are the
  same independent noise on both sides and add nothing, so d is that support, not the table's
  length (`CountSensitivity`).
- Any n' ≤ m of the honest shares already give the bound at n'; the rest is post-processing,
  so at each order the curve is the least bound over n' = 1..m (n' ≥ 2 only when σ ≥ 1/2).
  It is never below the central curve α‖Δ‖₂²/(2mσ²), never above a single share's.
- The curve at `RDP_ORDERS` converts to (ε, δ) by the conversion `composed_epsilon` uses
  (Opacus; Balle et al. 2020, Theorem 21), so these ε compare with every other one in
  fedsynth, and the curves of several releases add up before converting.

"Variance" below is the σ² parameter of N_Z(0, σ²); the discrete Gaussian's true variance is
slightly below it (CKS20): by 2e-7 of it at σ = 1, by 14 % at σ = 1/2, by nothing measurable
from σ = 1.5. Privacy is stated by the accountant, never by a variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from protocols.errors import PlanError
from protocols.privacy.accounting import RDP_ORDERS, epsilon_from_rdp, smallest_noise
from protocols.privacy.dp_noise import discrete_gaussian

# Proposition 14 needs shares of σ ≥ 1/2; below that only a single share's bound (CKS20) holds.
MIN_SUMMED_SIGMA = 0.5
_ORDERS = np.asarray(RDP_ORDERS, dtype=np.float64)


def honest_shares(min_survivors: int, colluders: int) -> int:
    """The fewest honest shares in any sum the plan allows: `min_survivors` sites reply and
    up to `colluders` of them give the coordinator their own share."""
    if min_survivors < 1 or colluders < 0:
        raise PlanError(f"A study needs at least one surviving site and a non-negative number "
                        f"of colluding sites (plan: {min_survivors} survivors, {colluders} "
                        f"colluders).")
    if colluders >= min_survivors:
        raise PlanError(
            f"The plan tolerates {colluders} colluding site(s) but requires only {min_survivors} "
            f"surviving site(s) per round: the colluders could be every survivor, and no honest "
            f"site's noise would be left in the sum. Require more surviving sites or tolerate "
            f"fewer colluders.")
    return min_survivors - colluders


def share_variance(central_variance: float, min_survivors: int, colluders: int) -> float:
    """Each site's σ² so that every sum the plan allows holds at least `central_variance` of
    honest noise: central / (min_survivors − colluders), rounded up to the next float where
    needed so that the product is exactly, not just approximately, at least the central."""
    if central_variance < 0:
        raise ValueError(f"a variance cannot be negative ({central_variance})")
    shares = honest_shares(min_survivors, colluders)
    share = central_variance / shares
    while Fraction(share) * shares < Fraction(central_variance):
        share = math.nextafter(share, math.inf)
    return share


@dataclass(frozen=True)
class CountSensitivity:
    """How far adding or removing one record moves a site's integer vector Δ: ‖Δ‖₂ ≤ `l2`,
    ‖Δ‖₁ ≤ `l1`. For integers |Δ_j| ≤ Δ_j², so ‖Δ‖₁ ≤ ‖Δ‖₂²: that is the default and a cap.
    One record in one cell of each of k tables: l2 = √k, l1 = k."""

    l2: float = 1.0
    l1: float | None = None

    def __post_init__(self) -> None:
        if not self.l2 >= 1:
            raise ValueError(f"an integer vector that moves at all moves by ≥ 1 (l2 {self.l2})")
        if self.l1 is not None and self.l1 < self.l2:
            raise ValueError(f"‖Δ‖₁ ≥ ‖Δ‖₂ for every vector (l1 {self.l1} < l2 {self.l2})")

    @property
    def l1_bound(self) -> float:
        square = self.l2 * self.l2
        return square if self.l1 is None else min(self.l1, square)

    @property
    def support(self) -> int:
        """At most this many cells move (each by one or more); float error may raise it by
        one, which only loosens the bound, never lowers it."""
        return math.floor(self.l1_bound + 1e-9)


def tau(share_sigma: float, shares: int) -> float:
    """KLS21's τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)): how far the sum of `shares`
    discrete Gaussians of σ is from one discrete Gaussian (0 for a single share)."""
    return 10 * math.fsum(math.exp(-2 * math.pi ** 2 * share_sigma ** 2 * k / (k + 1))
                          for k in range(1, shares))


def sum_of_shares_renyi(alpha: float | np.ndarray, shares: int, share_sigma: float,
                        l2: float, l1: float, dimension: int) -> float | np.ndarray:
    """KLS21 Proposition 14 as stated: the Rényi divergence of order `alpha` between the sum
    of `shares` N_Z(0, σ²)^d shares and its shift by any Δ ∈ Z^d with ‖Δ‖₂ ≤ l2, ‖Δ‖₁ ≤ l1.
    With one share (τ = 0) it is CKS20's discrete Gaussian, which holds for every σ > 0."""
    if shares < 1 or (shares > 1 and share_sigma < MIN_SUMMED_SIGMA):
        raise ValueError(f"Proposition 14 needs σ ≥ 1/2 for a sum ({shares} shares of σ "
                         f"{share_sigma})")
    t = tau(share_sigma, shares)
    scale = math.sqrt(shares) * share_sigma  # the summed noise's σ
    additive = alpha * l2 ** 2 / (2 * scale ** 2) + t * dimension
    through_l1 = alpha / 2 * (l2 ** 2 / scale ** 2 + 2 * t * l1 / scale + t ** 2 * dimension)
    through_l2 = alpha / 2 * (l2 / scale + t * math.sqrt(dimension)) ** 2
    return np.minimum(np.minimum(additive, through_l1), through_l2)


def release_rdp(share_sigma: float, shares: int,
                sensitivity: CountSensitivity = CountSensitivity()) -> list[float]:
    """Rényi curve over `RDP_ORDERS` of one release whose noise is the sum of `shares` honest
    shares of σ: at each order the least Proposition 14 bound over n' = 1..shares of them."""
    if shares < 1:
        raise ValueError(f"a release needs at least one honest share, not {shares}")
    if share_sigma <= 0:
        return [math.inf] * len(RDP_ORDERS)
    usable = range(1, shares + 1) if share_sigma >= MIN_SUMMED_SIGMA else range(1, 2)
    curve = np.full(len(RDP_ORDERS), np.inf)
    for n in usable:
        curve = np.minimum(curve, sum_of_shares_renyi(
            _ORDERS, n, share_sigma, sensitivity.l2, sensitivity.l1_bound, sensitivity.support))
    return [float(v) for v in curve]


def distributed_epsilon(share_sigma: float, shares: int, delta: float,
                        sensitivity: CountSensitivity = CountSensitivity()) -> float:
    """ε at `delta` of one release against a coordinator that runs SecAgg+ as specified,
    when its sum holds `shares` honest shares of σ (`honest_shares` of the plan)."""
    return epsilon_from_rdp(release_rdp(share_sigma, shares, sensitivity), delta)


def exposed_share_epsilon(share_sigma: float, delta: float,
                          sensitivity: CountSensitivity = CountSensitivity()) -> float:
    """ε at `delta` of one site's release if secure aggregation fails and the coordinator
    sees that site's counts plus its own share alone."""
    return distributed_epsilon(share_sigma, 1, delta, sensitivity)


def calibrate_share_sigma(epsilon: float, delta: float, min_survivors: int, colluders: int,
                          sensitivity: CountSensitivity = CountSensitivity()) -> float:
    """The smallest share σ whose release is at most `epsilon` at `delta` against the plan's
    worst sum (min_survivors − colluders honest shares): within `EPSILON_TOLERANCE` below
    the target, or exactly where the sum's bound starts to apply (σ = 1/2) when the target
    falls in that step. 0 for the non-private reference (ε = ∞)."""
    shares = honest_shares(min_survivors, colluders)
    if math.isinf(epsilon):
        return 0.0
    # ε falls as σ grows (every term of the bound does, and more shares become usable).
    return smallest_noise(lambda s: distributed_epsilon(s, shares, delta, sensitivity),
                          epsilon, f"{shares} honest share(s) at delta {delta:g}")


def noisy_share(counts: np.ndarray, share_sigma: float) -> np.ndarray:
    """One site's contribution to the secure sum: its integer `counts` plus its own share
    N_Z(0, σ²) on every cell, sampled exactly from the CSPRNG (`dp_noise.discrete_gaussian`);
    int64, same shape. No float on the path: the share is drawn on zeros, and added to the
    counts in int64. σ = 0 (the non-private reference) returns the counts."""
    values = np.asarray(counts)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"a noisy share takes integer counts, not {values.dtype}")
    if share_sigma < 0:
        raise ValueError(f"a noise scale cannot be negative ({share_sigma})")
    whole = values.astype(np.int64, casting="safe")
    return whole + discrete_gaussian(np.zeros(whole.shape, dtype=np.int64), share_sigma)
