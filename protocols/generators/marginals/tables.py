"""The second generator family: noisy marginals, released in two stages, and a graphical model.

Stage 1: each site releases noisy counts of every column on its own, in fine
bins of the declared range. Stage 2: every site cuts each column into a few
coarse bins at quantiles of the sites' averaged stage-1 tables (which it
receives as the global arrays) and releases noisy counts of every pair of
columns on those bins. The coordinator averages the sites' tables (the sum up
to a constant, which is all the sampler needs), fits one graphical model to all
of them (private-pgm, `graphical`) and samples records from it.

Why. With 40–400 records per site, DP-SGD spends its budget on hundreds of
noisy steps of a network, and the benchmark (benchmarks/RESULTS.md) shows the
VAE keeping the columns but few of the associations. Releasing a few hundred
counts spends the same ε on exactly the statistics the evaluation cares about.
Coarse bins at quantiles (rather than equal widths of the declared range)
matter for skewed lab values: with equal widths nearly every GBSG2 receptor
value fell in the first bin and the pair tables carried nothing (without DP,
strong associations kept rose from 0.31 to 0.92 in a prototype).

Guarantee. One record changes one cell of every table by one, so the two
stages, with noise σ_t on table t, compose (RDP adds up) to a Gaussian
mechanism with L2 sensitivity 1 and noise multiplier z = (Σ_t σ_t⁻²)^(-1/2):
record-level (ε, δ)-DP per site over the study, with z solved by Opacus' RDP
accountant and ε reported by the same accountant (with the plan's evaluation
release, when it has one, in the same composition). The noise is the discrete
Gaussian, sampled exactly from a CSPRNG (`protocols.privacy.dp_noise`): every released
cell is a whole number, so no float's low bits can tell a count of 0 from 1.
z depends on the plan (and the public schema's number of tables) alone, never
on a site's size.

Under secure aggregation each site adds only a share of that noise, variance
z²/m with m = min-sites − colluders (`distributed_noise`): every sum SecAgg+
releases holds at least m honest shares, whose variances add up to the central
one, so the consortium pays the noise of one central release instead of √K
times it. The sum of discrete Gaussians is charged by Kairouz, Liu & Steinke's
bound (ICML 2021, Proposition 14), and a site's share seen alone, if secure
aggregation failed, by `exposed_epsilon`, which the manifest states. Fine bins come from the
schema's declared bounds alone; coarse bins from stage-1 DP outputs only
(post-processing). Everything after the release (the graphical model,
sampling) is post-processing.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from protocols.count_tables import PAIR_NOISE_RATIO, MarginalLayout
from protocols.plan import StudyPlan
from protocols.privacy.accounting import (epsilon_from_rdp, rdp_curve, smallest_noise,
                                          with_evaluation)
from protocols.privacy.distributed_noise import (CountSensitivity, honest_shares, noisy_share,
                                                 release_rdp, share_variance)

STAGES = 2  # column tables, then pair tables


def honest_sum_shares(plan: StudyPlan) -> int:
    """How many sites' noise every released sum is sure to hold. Under secure aggregation
    each site adds only a share of the central noise and every sum holds at least
    min-sites − colluders honest shares (`distributed_noise.honest_shares`); without it a
    site's tables stand alone, with the full noise: 1."""
    if not plan.secure_aggregation:
        return 1
    return honest_shares(plan.min_sites, plan.colluders)


def table_counts(layout: MarginalLayout) -> tuple[int, int]:
    """(column tables, pair tables) of `layout`: what the noise is spread over."""
    n_one = len(layout.columns)
    return n_one, n_one * (n_one - 1) // 2


@functools.lru_cache(maxsize=64)
def release_noise_multiplier(plan: StudyPlan, n_one: int, n_two: int) -> float:
    """The central noise multiplier z of both stages: the smallest for which the tables'
    release and the plan's evaluation release compose to at most `plan.epsilon` (against a
    coordinator running SecAgg+ as specified, when the plan uses it); 0 without DP. Each
    site adds `site_noise_multiplier` of it."""
    if not plan.private:
        return 0.0
    shares = honest_sum_shares(plan)
    return smallest_noise(
        lambda z: _epsilon(plan, n_one, n_two, _share(plan, z), shares, STAGES, True),
        plan.epsilon, f"the marginal tables with delta {plan.delta:g}")


def site_noise_multiplier(plan: StudyPlan, n_one: int, n_two: int) -> float:
    """What one site adds: the central z, or its share of the m honest shares every
    secure sum holds (variances add up: m shares of z²/m make z²)."""
    return _share(plan, release_noise_multiplier(plan, n_one, n_two))


def _share(plan: StudyPlan, z: float) -> float:
    """A site's part of central multiplier z: all of it, or under secure aggregation the
    share whose variance, times the honest shares, is at least z² (`share_variance`)."""
    if honest_sum_shares(plan) == 1:
        return z
    return math.sqrt(share_variance(z * z, plan.min_sites, plan.colluders))


def noise_scales(layout: MarginalLayout, noise_multiplier: float) -> tuple[float, float]:
    """(σ of a column table, σ of a pair table) whose combined multiplier is `noise_multiplier`:
    n₁/σ₁² + n₂/σ₂² = 1/z², so both stages together are one Gaussian mechanism of multiplier z."""
    return table_noise_scales(*table_counts(layout), noise_multiplier)


def table_noise_scales(n_one: int, n_two: int, noise_multiplier: float) -> tuple[float, float]:
    """`noise_scales` from the numbers of column and pair tables alone."""
    sigma_one = noise_multiplier * np.sqrt(n_one + n_two / PAIR_NOISE_RATIO ** 2)
    return float(sigma_one), float(sigma_one * PAIR_NOISE_RATIO)


def stages_epsilon(layout: MarginalLayout, plan: StudyPlan, stages: int,
                   evaluated: bool = False) -> float:
    """ε of the first `stages` releases (and of the plan's evaluation release when
    `evaluated`) against a coordinator that runs SecAgg+ as specified when the plan uses
    it; inf without DP."""
    if not plan.private:
        return math.inf
    n_one, n_two = table_counts(layout)
    return _epsilon(plan, n_one, n_two, site_noise_multiplier(plan, n_one, n_two),
                    honest_sum_shares(plan), stages, evaluated)


def exposed_epsilon(layout: MarginalLayout, plan: StudyPlan) -> float | None:
    """ε of one site's whole release (both stages and its evaluation release) if the
    coordinator saw it alone, outside a secure sum: its share of the noise only. None when
    the site adds the full noise (no secure aggregation)."""
    shares = honest_sum_shares(plan)
    if shares == 1 or not plan.private:
        return None
    n_one, n_two = table_counts(layout)
    return _epsilon(plan, n_one, n_two, site_noise_multiplier(plan, n_one, n_two), 1,
                    STAGES, True)


def _epsilon(plan: StudyPlan, n_one: int, n_two: int, share_z: float, shares: int,
             stages: int, evaluated: bool) -> float:
    """ε of `stages` stages whose noise is the sum of `shares` honest shares, each of
    multiplier `share_z` as a site adds it (KLS21 Proposition 14, `distributed_noise`; one
    share: the discrete Gaussian's own curve), composed in RDP with the evaluation release
    when `evaluated`."""
    curve = np.asarray(rdp_curve(with_evaluation(plan, [], evaluated)))
    share_sigmas = table_noise_scales(n_one, n_two, share_z)  # as the node draws them
    for sigma, n_tables in list(zip(share_sigmas, (n_one, n_two)))[:stages]:
        if n_tables:  # one record moves one cell of each of the stage's tables by one
            sensitivity = CountSensitivity(math.sqrt(n_tables), n_tables)
            curve = curve + release_rdp(sigma, shares, sensitivity)
    return epsilon_from_rdp(list(curve), plan.delta)


def noisy_column_tables(layout: MarginalLayout, parsed: pd.DataFrame,
                        noise_multiplier: float) -> dict[str, np.ndarray]:
    """Stage 1 of a site's release: every column table plus integer (discrete Gaussian)
    noise from a CSPRNG; each cell an exact whole number."""
    sigma = noise_scales(layout, noise_multiplier)[0]
    return _plus_noise(layout.column_counts(parsed), sigma)


def noisy_pair_tables(layout: MarginalLayout, parsed: pd.DataFrame,
                      noise_multiplier: float) -> dict[str, np.ndarray]:
    """Stage 2: every pair table on `layout`'s coarse bins, plus integer noise."""
    sigma = noise_scales(layout, noise_multiplier)[1]
    return _plus_noise(layout.pair_counts(parsed), sigma)


def _plus_noise(tables: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    # Counts and noise added in int64 (`noisy_share`); float64 on the wire (the global
    # tables' dtype), every value an exact integer.
    return {name: noisy_share(t.astype(np.int64), sigma).astype(np.float64)
            for name, t in tables.items()}
