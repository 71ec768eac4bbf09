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
Gaussian, sampled exactly from a CSPRNG (`protocols.dp_noise`): every released
cell is a whole number, so no float's low bits can tell a count of 0 from 1.
z depends on the plan alone, never on a site's size. Fine bins come from the
schema's declared bounds alone; coarse bins from stage-1 DP outputs only
(post-processing). Everything after the release (clipping negative counts,
the tree, sampling) is post-processing.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocols.accounting import GaussianRelease, calibrate, composed_epsilon, with_evaluation
from protocols.dp_noise import discrete_gaussian
from protocols.encoding import TableEncoding, build_encoding, scale, unscale
from protocols.plan import StudyPlan
from protocols.schema import Column, Schema

FINE_BINS = 32  # per bounded column, for its own distribution (fewer for short integer ranges)
COARSE_BINS = 4  # per bounded column, inside the pair tables
BIN_POWER = 2.0  # fine bin edges (i / K) ** 2 of the declared range: fine where skewed values sit
PAIR_NOISE_RATIO = 3.0  # σ of a pair table / σ of a column table (the budget favours columns)


@dataclass(frozen=True)
class MarginalLayout:
    """Which cell of which table a record falls in.

    Fine bins are a pure function of the schema. The coarse bins of the pair
    tables are, in stage 2, groups of fine bins at quantiles of the stage-1
    column tables (`with_groups`): DP outputs every site and the coordinator
    hold, so the grouping is post-processing, not a look at anyone's records.
    """

    schema: Schema
    encoding: TableEncoding
    groups: Mapping[str, np.ndarray] | None = None

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.schema.features

    def fine_size(self, col: Column) -> int:
        return _value_bins(col)[0] + (1 if col.nullable else 0)

    def coarse_size(self, col: Column) -> int:
        return _coarse_bins(col) + (1 if col.nullable else 0)

    def table_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {one_name(c): (self.fine_size(c),) for c in self.columns}
        for a, b in itertools.combinations(self.columns, 2):
            shapes[pair_name(a, b)] = (self.coarse_size(a), self.coarse_size(b))
        return shapes

    def fine_codes(self, parsed: pd.DataFrame) -> dict[str, np.ndarray]:
        return {c.name: _fine_code(c, parsed[c.name]) for c in self.columns}

    def coarse(self, col: Column, fine: np.ndarray) -> np.ndarray:
        if self.groups is not None:
            return self.groups[col.name][fine]
        return group_fine_bins(col, fine, _coarse_bins(col))

    def with_groups(self, column_tables: Mapping[str, np.ndarray]) -> MarginalLayout:
        """The stage-2 layout: coarse bins at quantiles of the (noisy) column tables."""
        groups = {c.name: _quantile_groups(c, np.asarray(column_tables[one_name(c)]))
                  for c in self.columns}
        return MarginalLayout(self.schema, self.encoding, groups)

    def column_counts(self, parsed: pd.DataFrame) -> dict[str, np.ndarray]:
        fine = self.fine_codes(parsed)
        return {one_name(c): np.bincount(fine[c.name], minlength=self.fine_size(c)).astype(float)
                for c in self.columns}

    def pair_counts(self, parsed: pd.DataFrame) -> dict[str, np.ndarray]:
        fine = self.fine_codes(parsed)
        tables = {}
        for a, b in itertools.combinations(self.columns, 2):
            table = np.zeros((self.coarse_size(a), self.coarse_size(b)))
            np.add.at(table, (self.coarse(a, fine[a.name]), self.coarse(b, fine[b.name])), 1.0)
            tables[pair_name(a, b)] = table
        return tables

    def counts(self, parsed: pd.DataFrame) -> dict[str, np.ndarray]:
        """Exact counts of every table (never leaves the node without noise)."""
        return {**self.column_counts(parsed), **self.pair_counts(parsed)}


def build_layout(schema: Schema) -> MarginalLayout:
    return MarginalLayout(schema=schema, encoding=build_encoding(schema))


def one_name(col: Column) -> str:
    return f"1|{col.name}"


def pair_name(a: Column, b: Column) -> str:
    return f"2|{a.name}|{b.name}"


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


def _quantile_groups(col: Column, column_table: np.ndarray) -> np.ndarray:
    """Fine bin → coarse bin: contiguous groups holding about equal shares of the
    (clipped) column table, every group non-empty; missing keeps its own group."""
    bins, groups = _value_bins(col)[0], _coarse_bins(col)
    if col.is_discrete:
        return np.arange(len(column_table))
    mass = np.clip(column_table[:bins], 0.0, None) + 1e-9
    share = np.cumsum(mass) / mass.sum()
    cuts = np.searchsorted(share, np.arange(1, groups) / groups, side="left") + 1
    for j in range(len(cuts)):  # strictly increasing and leaving room for the later groups
        low = cuts[j - 1] + 1 if j else 1
        cuts[j] = min(max(cuts[j], low), bins - (groups - 1 - j))
    out = np.searchsorted(cuts, np.arange(bins), side="right")
    return np.concatenate([out, np.full(len(column_table) - bins, groups)]).astype(int)


def group_fine_bins(col: Column, fine: np.ndarray, groups: int) -> np.ndarray:
    """Fine codes cut into `groups` equal runs of fine bins (a function of the schema
    alone); the missing code keeps a cell of its own, after them."""
    bins = _value_bins(col)[0]
    return np.where(fine >= bins, groups, fine * groups // bins).astype(int)


def value_bins(col: Column) -> int:
    """How many fine bins hold `col`'s values (missing has one more when nullable)."""
    return _value_bins(col)[0]


def _value_bins(col: Column) -> tuple[int, bool]:
    """(number of value bins, whether each bin is one integer value)."""
    if col.is_discrete:
        return len(col.categories), True
    if col.type in ("integer", "date") and col.high - col.low + 1 <= FINE_BINS:
        return int(col.high - col.low) + 1, True
    return FINE_BINS, False


def _coarse_bins(col: Column) -> int:
    return len(col.categories) if col.is_discrete else min(COARSE_BINS, _value_bins(col)[0])


def _fine_code(col: Column, values: pd.Series) -> np.ndarray:
    bins, exact = _value_bins(col)
    if col.is_discrete:
        index = values.map({label: i for i, label in enumerate(col.categories)})
        return index.fillna(bins).to_numpy(dtype=int)
    numbers = values.to_numpy(dtype=float)
    unit = np.clip(np.nan_to_num(scale(col, numbers), nan=0.0), 0.0, 1.0)
    grid = unit if exact else unit ** (1.0 / BIN_POWER)
    codes = np.clip(np.floor(grid * bins), 0, bins - 1).astype(int)
    return np.where(np.isnan(numbers), bins, codes)


def fine_to_encoded(layout: MarginalLayout, fine: dict[str, np.ndarray],
                    rng: np.random.Generator) -> np.ndarray:
    """Encoded records (the VAE's layout) for fine codes: a value is drawn uniformly in its
    bin, so `TableEncoding.decode` gives exactly the schema's columns and types."""
    n = len(next(iter(fine.values()))) if fine else 0
    out = np.zeros((n, layout.encoding.width), dtype=np.float32)
    for col in layout.columns:
        blocks = {b.kind: b for b in layout.encoding.blocks_of(col.name)}
        codes = fine[col.name]
        if col.is_discrete:
            out[np.arange(n), blocks["onehot"].start + codes] = 1.0
            continue
        bins, exact = _value_bins(col)
        missing = codes >= bins
        if exact:
            values = col.low + np.minimum(codes, bins - 1)
        else:
            position = np.where(missing, 0.0, (codes + rng.random(n)) / bins)
            values = unscale(col, position ** BIN_POWER)
        out[:, blocks["continuous"].start] = np.where(missing, 0.5, scale(col, values))
        if "missing" in blocks:
            out[:, blocks["missing"].start] = missing
    return out
