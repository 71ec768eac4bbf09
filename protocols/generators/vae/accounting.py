"""DP-SGD's accounting: the noise multiplier of a VAE study and its ε after any step.

Each step is a Poisson-subsampled Gaussian mechanism (rate q = the plan's
`sample_rate`, noise σ·C on the sum of gradients clipped to C; Abadi et al.,
CCS 2016), composed over all `rounds × local_steps` steps of the study and
with the plan's evaluation release in Rényi DP (`protocols.privacy.accounting`).
σ is calibrated once from the plan, so every site runs the same mechanism and
reports the same ε whatever its size.
"""

from __future__ import annotations

import functools
import math

from protocols.generators.family import SitePrivacy
from protocols.plan import StudyPlan
from protocols.privacy.accounting import (GaussianRelease, calibrate, composed_epsilon,
                                          with_evaluation)
from protocols.privacy.site_limits import MIN_SITE_RECORDS

# DP-SGD adds Gaussian noise of standard deviation σ·C to the sum of an expected
# q·n clipped gradients (norm ≤ C each), so the averaged step carries noise of
# σ/(q·n) clipping norms per coordinate. Above 1 the noise outweighs the largest
# signal any record can give on every coordinate and the model learns nothing.
MAX_NOISE_TO_SIGNAL = 1.0


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(plan: StudyPlan) -> float:
    """DP-SGD's σ for the whole study: the smallest whose `plan.total_steps` steps at the
    plan's sample rate, with the evaluation release, compose to at most `plan.epsilon`.
    0.0 for the non-private reference (`epsilon = inf`)."""
    if not plan.private:
        return 0.0
    return calibrate(lambda z: with_evaluation(plan, dpsgd_releases(plan, z, plan.total_steps)),
                     plan.epsilon, plan.delta, f"{plan.total_steps} DP-SGD steps")


def dpsgd_releases(plan: StudyPlan, noise_multiplier: float, steps: int
                   ) -> list[GaussianRelease]:
    return [GaussianRelease(noise_multiplier, plan.sample_rate, steps)]


@functools.lru_cache(maxsize=256)
def dpsgd_epsilon(plan: StudyPlan, steps: int, evaluated: bool = False) -> float:
    """ε of `steps` DP-SGD steps of `plan` (and of its evaluation release when
    `evaluated`); inf without DP. The same at every site, so a process that answers for
    several sites (the simulation's workers) computes it once per round."""
    if not plan.private:
        return math.inf
    releases = dpsgd_releases(plan, noise_multiplier_for(plan), steps)
    return composed_epsilon(with_evaluation(plan, releases, evaluated), plan.delta)


def noise_to_signal(plan: StudyPlan, n_records: int) -> float:
    """Per-coordinate noise on one averaged DP-SGD step, in clipping norms: σ / (q·n)."""
    return noise_multiplier_for(plan) / (plan.sample_rate * max(1, n_records))


def dpsgd_privacy(plan: StudyPlan) -> SitePrivacy:
    """Every site's DP-SGD mechanism for the study: the plan's sample rate and σ."""
    return SitePrivacy(plan.sample_rate, noise_multiplier_for(plan))


def minimum_site_records(plan: StudyPlan) -> int:
    """`MIN_SITE_RECORDS`, and enough records that the noise does not outweigh the
    signal on every step. A function of the plan alone, so it can be published with it."""
    if not plan.private:
        return MIN_SITE_RECORDS
    needed = math.ceil(noise_multiplier_for(plan) / (plan.sample_rate * MAX_NOISE_TO_SIGNAL))
    return max(MIN_SITE_RECORDS, needed)


def too_small(plan: StudyPlan, n_records: int) -> str:
    """Why DP-SGD learns noise on a site of `n_records`."""
    return (f"with {n_records} records, epsilon {plan.epsilon:g} over "
            f"{plan.total_steps} DP-SGD steps needs noise "
            f"{noise_to_signal(plan, n_records):.2f} times the clipping norm on every "
            f"averaged step (at most {MAX_NOISE_TO_SIGNAL:g}): the model would learn noise")
