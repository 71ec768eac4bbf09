"""The second generator family: noisy marginals, released in two stages, and a tree sampler.

Stage 1: each site releases noisy counts of every column on its own, in fine
bins of the declared range. Stage 2: every site cuts each column into a few
coarse bins at quantiles of the sites' averaged stage-1 tables (which it
receives as the global arrays) and releases noisy counts of every pair of
columns on those bins. The coordinator averages the sites' tables (the sum up
to a constant, which is all the sampler needs), fits a Chow–Liu tree on the
pairs' mutual information and samples records along it.

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
z depends on the plan alone, never on a site's size. Fine bins come from the
schema's declared bounds alone; coarse bins from stage-1 DP outputs only
(post-processing). Everything after the release (clipping negative counts,
the tree, sampling) is post-processing.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from protocols.count_tables import PAIR_NOISE_RATIO, MarginalLayout
from protocols.plan import StudyPlan
from protocols.privacy.accounting import (GaussianRelease, calibrate, composed_epsilon,
                                          with_evaluation)
from protocols.privacy.dp_noise import discrete_gaussian


@functools.lru_cache(maxsize=64)
def release_noise_multiplier(plan: StudyPlan) -> float:
    """The smallest combined noise multiplier z of both stages (one Gaussian mechanism at
    sample rate 1) for which the tables and the plan's evaluation release compose to at
    most `plan.epsilon`; 0 for the non-private reference."""
    if not plan.private:
        return 0.0
    return calibrate(lambda z: with_evaluation(plan, [GaussianRelease(z)]), plan.epsilon,
                     plan.delta, "the marginal tables")


def noise_scales(layout: MarginalLayout, noise_multiplier: float) -> tuple[float, float]:
    """(σ of a column table, σ of a pair table) whose combined multiplier is `noise_multiplier`:
    n₁/σ₁² + n₂/σ₂² = 1/z², so both stages together are one Gaussian mechanism of multiplier z."""
    n_one = len(layout.columns)
    return table_noise_scales(n_one, n_one * (n_one - 1) // 2, noise_multiplier)


def table_noise_scales(n_one: int, n_two: int, noise_multiplier: float) -> tuple[float, float]:
    """`noise_scales` from the numbers of column and pair tables alone."""
    sigma_one = noise_multiplier * np.sqrt(n_one + n_two / PAIR_NOISE_RATIO ** 2)
    return float(sigma_one), float(sigma_one * PAIR_NOISE_RATIO)


def stage_multipliers(layout: MarginalLayout, noise_multiplier: float) -> tuple[float, float]:
    """The noise multiplier of each stage alone (column tables, then pair tables)."""
    n_one = len(layout.columns)
    n_two = n_one * (n_one - 1) // 2
    sigma_one, sigma_two = noise_scales(layout, noise_multiplier)
    return sigma_one / math.sqrt(n_one), sigma_two / math.sqrt(max(1, n_two))


def stages_epsilon(layout: MarginalLayout, plan: StudyPlan, stages: int,
                   evaluated: bool = False) -> float:
    """ε of the first `stages` releases (and of the plan's evaluation release when
    `evaluated`), composed by Opacus' RDP accountant; inf without DP."""
    if not plan.private:
        return math.inf
    multipliers = stage_multipliers(layout, release_noise_multiplier(plan))[:stages]
    releases = [GaussianRelease(z) for z in multipliers]
    return composed_epsilon(with_evaluation(plan, releases, evaluated), plan.delta)


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
    # float64 on the wire (the global tables' dtype); every value is an exact integer.
    return {name: discrete_gaussian(t, sigma).astype(np.float64) for name, t in tables.items()}
