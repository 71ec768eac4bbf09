"""Privacy accounting for DP-SGD over a whole study.

Every site trains with Poisson sampling at rate q = batch_size / n for
`rounds × local_steps` steps. The noise multiplier is fixed *before round 1*
from the plan's ε and δ and that total number of steps, so that all rounds
together stay within ε: the guarantee is record-level (ε, δ)-DP per site over
the whole study, computed with Opacus' RDP accountant (the same accountant the
node attaches to its optimizer, so the reported ε is that of the steps that
actually ran).

A site must also be large enough for the guarantee to mean something
(`check_site_size`): δ < 1/n (which bounds n from above), at least `MIN_SITE_RECORDS` records, and, for
DP-SGD, noise on each step's averaged gradient no larger than the clipping
norm (`noise_to_signal` ≤ `MAX_NOISE_TO_SIGNAL`). A smaller site is refused
before any step, with the smallest size this plan would accept.
"""

from __future__ import annotations

import math

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from protocols.errors import PlanError
from protocols.plan import StudyPlan

ACCOUNTANT = "rdp"
# Opacus' default RDP orders stop at 63; with few records per site the noise is
# large and the best order lies beyond that, so the default bound is loose.
# Higher orders are equally valid and make it tighter (less noise for the same
# ε). Every ε in fedsynth is computed over these same orders.
RDP_ORDERS = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]

# Below this many records a site's DP release is dominated by noise whatever the plan,
# and a single patient is a large share of the site: such a site is refused.
MIN_SITE_RECORDS = 20
# DP-SGD adds Gaussian noise of standard deviation σ·C to the sum of an expected
# q·n clipped gradients (norm ≤ C each), so the averaged step carries noise of
# σ/(q·n) clipping norms per coordinate. Above 1 the noise outweighs the largest
# signal any record can give on every coordinate and the model learns nothing.
MAX_NOISE_TO_SIGNAL = 1.0
_LARGEST_SITE_SEARCHED = 10_000_000


def sample_rate_for(n_records: int, batch_size: int) -> float:
    """Poisson sampling rate giving `batch_size` records per step on average."""
    return min(1.0, batch_size / n_records)


def check_delta(delta: float, n_records: int, source: str) -> None:
    """δ must be below 1/n: a mechanism may fail outright with probability δ, and with
    δ ≥ 1/n that failure could be the release of a whole record."""
    if delta >= 1.0 / n_records:
        raise PlanError(f"{source}: delta {delta:g} is not below 1/n = 1/{n_records}; with "
                        "this many records a failure of probability delta could release a "
                        "whole record. Lower delta in the study plan (below "
                        f"{1.0 / n_records:.3g}).")


def noise_to_signal(noise_multiplier: float, sample_rate: float, n_records: int) -> float:
    """Per-coordinate noise on one averaged DP-SGD step, in clipping norms: σ / (q·n)."""
    return noise_multiplier / (sample_rate * n_records)


def too_small_because(plan: StudyPlan, n_records: int) -> str | None:
    """Why a site of `n_records` is too small for a meaningful DP study under `plan`,
    or None when it is large enough. A non-private reference is never refused."""
    if not plan.private:
        return None
    if n_records < MIN_SITE_RECORDS:
        return f"it has {n_records} records, fewer than the {MIN_SITE_RECORDS} any study needs"
    if plan.generator != "vae":
        return None
    rate = sample_rate_for(n_records, plan.batch_size)
    ratio = noise_to_signal(noise_multiplier_for(plan, rate), rate, n_records)
    if ratio > MAX_NOISE_TO_SIGNAL:
        return (f"with {n_records} records, epsilon {plan.epsilon:g} over "
                f"{plan.total_steps} DP-SGD steps needs noise {ratio:.2f} times the "
                f"clipping norm on every averaged step (at most {MAX_NOISE_TO_SIGNAL:g}): "
                "the model would learn noise")
    return None


def minimum_site_records(plan: StudyPlan) -> int | None:
    """The smallest site `plan` accepts as large enough (the rules of
    `too_small_because` only relax as n grows, so doubling then bisection finds it);
    None if no size up to ten million would do."""
    if too_small_because(plan, _LARGEST_SITE_SEARCHED):
        return None
    low, high = 0, MIN_SITE_RECORDS
    while too_small_because(plan, high):
        low, high = high, min(2 * high, _LARGEST_SITE_SEARCHED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if too_small_because(plan, middle) else (low, middle)
    return high


def check_site_size(plan: StudyPlan, n_records: int, source: str) -> None:
    """Refuse, before any step, a site that `plan` cannot protect meaningfully:
    too few records, or too many for its δ."""
    if plan.private:
        check_delta(plan.delta, n_records, source)
    problem = too_small_because(plan, n_records)
    if problem is None:
        return
    smallest = minimum_site_records(plan)
    remedy = "a larger epsilon, or fewer rounds or local steps, lower the minimum"
    if smallest is None:
        need = "No site size makes this plan meaningful"
    elif plan.delta >= 1.0 / smallest:
        need = (f"No site size suits this plan: its noise needs at least {smallest} records "
                f"per site, and its delta {plan.delta:g} allows fewer than {1 / plan.delta:g}")
        remedy = "lower delta, or " + remedy
    else:
        need = f"This plan needs at least {smallest} records per site"
    raise PlanError(f"{source}: too small for a meaningful differentially private study: "
                    f"{problem}. {need}; {remedy}.")


def noise_multiplier_for(plan: StudyPlan, sample_rate: float) -> float:
    """The smallest noise multiplier (to Opacus' tolerance) whose ε over all
    `plan.total_steps` steps at `sample_rate` is at most `plan.epsilon`.

    Returns 0.0 for the non-private reference (`epsilon = inf`).
    """
    if not plan.private:
        return 0.0
    try:
        return float(get_noise_multiplier(
            target_epsilon=plan.epsilon, target_delta=plan.delta, sample_rate=sample_rate,
            steps=plan.total_steps, accountant=ACCOUNTANT, epsilon_tolerance=0.005,
            alphas=RDP_ORDERS))
    except ValueError as exc:
        raise PlanError(f"No noise level reaches epsilon {plan.epsilon:g} with delta "
                        f"{plan.delta:g} over {plan.total_steps} steps: {exc}.") from None


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of `steps` DP-SGD steps at this noise and sampling rate (inf without noise)."""
    if steps == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return accountant_epsilon(accountant, delta)


def accountant_epsilon(accountant: RDPAccountant, delta: float) -> float:
    """ε of everything `accountant` has recorded, over fedsynth's RDP orders."""
    return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))
