"""Privacy accounting: what a study costs each site, from the plan alone.

Every release fedsynth makes at a site is a Gaussian mechanism on a query of
L2 sensitivity 1 under add/remove-one-record neighbouring, possibly
Poisson-subsampled:
- DP-SGD steps: per-record gradients clipped to norm C, each record used with
  probability q (the plan's `sample_rate`), noise σ·C (Abadi et al., CCS 2016);
- the marginal tables and the federated-evaluation tables: counts with
  discrete Gaussian noise (protocols.privacy.dp_noise), whose Rényi curve α·Δ²/(2σ²)
  is the continuous Gaussian's (Canonne, Kamath & Steinke, NeurIPS 2020).
They compose by adding Rényi-DP curves (Mironov, CSF 2017), computed by
Opacus' RDP accountant (the sampled Gaussian of Mironov, Talwar & Zhang 2019)
over `RDP_ORDERS`, and convert to (ε, δ) with its conversion.

Nothing here reads a record count. q, σ and every ε a node reports, its ledger
records or a manifest states are functions of the plan (and, for the marginal
tables' split into stages, of the public schema), so they are the same at
every site and say nothing about its size. The noise of every release is
calibrated before round 1 so that the whole study, evaluation included, stays
within the plan's ε.

A site that is too small gets little from a study (`protocols.generators.
check_site_size`), but that is a utility rule checked on the operator's side,
never an answer a node gives a coordinator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from protocols.errors import PlanError
from protocols.plan import StudyPlan

ACCOUNTANT = "rdp"
# Opacus' default RDP orders stop at 63; with few records per site the noise is
# large and the best order lies beyond that, so the default bound is loose.
# Higher orders are equally valid and make it tighter (less noise for the same
# ε). Every ε in fedsynth is computed over these same orders.
RDP_ORDERS = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]
# ε found by calibration lies within this much below the target (never above it).
EPSILON_TOLERANCE = 0.005

@dataclass(frozen=True)
class GaussianRelease:
    """`steps` Gaussian releases of noise multiplier σ (noise / L2 sensitivity), each on
    a Poisson sample of rate `sample_rate` (1: every record)."""

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1


def composed_epsilon(releases: Sequence[GaussianRelease], delta: float) -> float:
    """ε at `delta` of all `releases` together (0 for none, inf if one has no noise)."""
    if not any(r.steps > 0 for r in releases):
        return 0.0
    return epsilon_from_rdp(rdp_curve(releases), delta)


def epsilon_from_rdp(curve: Sequence[float], delta: float) -> float:
    """ε at `delta` of a Rényi curve over `RDP_ORDERS` (the curves of several releases
    added first), by Opacus' conversion (Balle et al. 2020, Theorem 21)."""
    if min(curve) == math.inf:
        return math.inf
    if max(curve) == 0:  # nothing released
        return 0.0
    epsilon, _ = get_privacy_spent(orders=RDP_ORDERS, rdp=list(curve), delta=delta)
    return float(epsilon)


def calibrate(releases_for: Callable[[float], list[GaussianRelease]], epsilon: float,
              delta: float, what: str) -> float:
    """The smallest noise multiplier z (to `EPSILON_TOLERANCE` in ε) for which
    `releases_for(z)` composes to at most `epsilon` at `delta`."""
    return smallest_noise(lambda z: composed_epsilon(releases_for(z), delta), epsilon,
                          f"{what} with delta {delta:g}")


def smallest_noise(epsilon_of: Callable[[float], float], epsilon: float, what: str) -> float:
    """The smallest noise scale s (to `EPSILON_TOLERANCE` in ε) with `epsilon_of(s)` at most
    `epsilon`, by bisection; `epsilon_of` must fall as s grows."""
    low, high = 0.0, 1.0
    while epsilon_of(high) > epsilon:
        low, high = high, 2 * high
        if high > 1e6:
            raise PlanError(f"No noise level reaches epsilon {epsilon:g} for {what}.")
    for _ in range(100):
        middle = (low + high) / 2
        spent = epsilon_of(middle)
        if spent > epsilon:
            low = middle
        else:
            high = middle
            if spent >= epsilon - EPSILON_TOLERANCE:
                break
    return high


def rdp_curve(releases: Sequence[GaussianRelease]) -> list[float]:
    """The Rényi curve over `RDP_ORDERS` of all `releases` together (to add to the curve
    of a release that is not a Gaussian mechanism before converting)."""
    active = [r for r in releases if r.steps > 0]
    if any(r.noise_multiplier <= 0 for r in active):
        return [math.inf] * len(RDP_ORDERS)
    curve = [0.0] * len(RDP_ORDERS)
    for release in active:
        part = compute_rdp(q=release.sample_rate, noise_multiplier=release.noise_multiplier,
                           steps=release.steps, orders=RDP_ORDERS)
        curve = [a + float(b) for a, b in zip(curve, part, strict=True)]
    return curve


@functools.lru_cache(maxsize=64)
def evaluation_release(plan: StudyPlan) -> GaussianRelease | None:
    """The federated-evaluation release: one Gaussian (on all the site's evaluation
    tables together, L2 sensitivity 1 after scaling) that alone is
    `plan.evaluation_epsilon`-DP at `plan.delta`; None without evaluation or DP."""
    if not (plan.private and plan.evaluated):
        return None
    multiplier = calibrate(lambda z: [GaussianRelease(z)], plan.evaluation_epsilon,
                           plan.delta, "the federated evaluation")
    return GaussianRelease(multiplier)


def with_evaluation(plan: StudyPlan, releases: list[GaussianRelease],
                    evaluated: bool = True) -> list[GaussianRelease]:
    """`releases` plus the plan's evaluation release (when it has one and `evaluated`)."""
    extra = evaluation_release(plan) if evaluated else None
    return releases + ([extra] if extra else [])
