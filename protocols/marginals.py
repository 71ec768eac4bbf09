"""The second generator family: noisy marginals, released once, and a tree sampler.

Each site releases, once, noisy counts of every column on its own (fine bins)
and of every pair of columns (coarse bins), with Gaussian noise; the
coordinator averages the sites' tables (the sum, up to a constant, which is
all the sampler needs), fits a Chow–Liu tree on the pairs' mutual
information, and samples records along the tree.

Why. With 40–400 records per site, DP-SGD spends its budget on hundreds of
noisy steps of a network, and the benchmark (benchmarks/RESULTS.md) shows the
VAE keeping the columns but few of the associations. Releasing a few hundred
counts once spends the same ε on exactly the statistics the evaluation cares
about, and averaging over sites shrinks the noise further.

Guarantee. One record changes one cell of every table by one, so the release
of all tables with noise σ_t on table t is a Gaussian mechanism with L2
sensitivity 1 and noise multiplier z = (Σ_t σ_t⁻²)^(-1/2): record-level
(ε, δ)-DP per site, with z solved by Opacus' RDP accountant (sample rate 1,
one step) and ε reported by the same accountant. Bins come from the schema's
declared bounds alone (data-independent); the noise comes from OS entropy.
Everything after the release (clipping negative counts, the tree, sampling) is
post-processing.
"""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass

import numpy as np
import pandas as pd
from opacus.accountants.utils import get_noise_multiplier

from protocols.accounting import ACCOUNTANT, RDP_ORDERS, epsilon_spent
from protocols.encoding import TableEncoding, build_encoding, scale, unscale
from protocols.errors import PlanError
from protocols.schema import Column, Schema

FINE_BINS = 32  # per bounded column, for its own distribution (fewer for short integer ranges)
COARSE_BINS = 4  # per bounded column, inside the pair tables
PAIR_NOISE_RATIO = 3.0  # σ of a pair table / σ of a column table (the budget favours columns)


@dataclass(frozen=True)
class MarginalLayout:
    """Which cell of which table a record falls in: a pure function of the schema."""

    schema: Schema
    encoding: TableEncoding

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
        bins, coarse = _value_bins(col)[0], _coarse_bins(col)
        return np.where(fine >= bins, coarse, fine * coarse // bins)

    def counts(self, parsed: pd.DataFrame) -> dict[str, np.ndarray]:
        """Exact counts of every table (never leaves the node without noise)."""
        fine = self.fine_codes(parsed)
        tables = {one_name(c): np.bincount(fine[c.name], minlength=self.fine_size(c)).astype(float)
                  for c in self.columns}
        for a, b in itertools.combinations(self.columns, 2):
            table = np.zeros((self.coarse_size(a), self.coarse_size(b)))
            np.add.at(table, (self.coarse(a, fine[a.name]), self.coarse(b, fine[b.name])), 1.0)
            tables[pair_name(a, b)] = table
        return tables


def build_layout(schema: Schema) -> MarginalLayout:
    return MarginalLayout(schema=schema, encoding=build_encoding(schema))


def one_name(col: Column) -> str:
    return f"1|{col.name}"


def pair_name(a: Column, b: Column) -> str:
    return f"2|{a.name}|{b.name}"


def release_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest Gaussian noise multiplier (Opacus' RDP accountant, one step at sample
    rate 1) whose ε at `delta` is at most `epsilon`; 0 for the non-private reference."""
    if not math.isfinite(epsilon):
        return 0.0
    try:
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                          sample_rate=1.0, steps=1, accountant=ACCOUNTANT,
                                          epsilon_tolerance=0.005, alphas=RDP_ORDERS))
    except ValueError as exc:
        raise PlanError(f"No noise level reaches epsilon {epsilon:g} with delta {delta:g} "
                        f"for the marginal tables: {exc}.") from None


def release_epsilon(noise_multiplier: float, delta: float) -> float:
    """ε of one release at this noise multiplier, from the same accountant."""
    return epsilon_spent(noise_multiplier, 1.0, 1, delta)


def noise_scales(layout: MarginalLayout, noise_multiplier: float) -> tuple[float, float]:
    """(σ of a column table, σ of a pair table) whose combined multiplier is `noise_multiplier`."""
    n_one = len(layout.columns)
    n_two = n_one * (n_one - 1) // 2
    sigma_one = noise_multiplier * np.sqrt(n_one + n_two / PAIR_NOISE_RATIO ** 2)
    return float(sigma_one), float(sigma_one * PAIR_NOISE_RATIO)


def noisy_tables(layout: MarginalLayout, parsed: pd.DataFrame,
                 noise_multiplier: float) -> dict[str, np.ndarray]:
    """The site's release: every table plus Gaussian noise drawn from OS entropy."""
    rng = np.random.default_rng(secrets.randbits(128))
    sigma_one, sigma_two = noise_scales(layout, noise_multiplier)
    return {name: table + rng.normal(0.0, sigma_one if name.startswith("1|") else sigma_two,
                                     table.shape)
            for name, table in layout.counts(parsed).items()}


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
    bins, _ = _value_bins(col)
    if col.is_discrete:
        index = values.map({label: i for i, label in enumerate(col.categories)})
        return index.fillna(bins).to_numpy(dtype=int)
    numbers = values.to_numpy(dtype=float)
    unit = np.nan_to_num(scale(col, numbers), nan=0.0)
    codes = np.clip(np.floor(unit * bins), 0, bins - 1).astype(int)
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
        position = codes + (0.5 if exact else rng.random(n))
        values = unscale(col, np.where(missing, 0.0, position / bins)) if not exact else \
            col.low + np.minimum(codes, bins - 1)
        out[:, blocks["continuous"].start] = np.where(missing, 0.5, scale(col, values))
        if "missing" in blocks:
            out[:, blocks["missing"].start] = missing
    return out
