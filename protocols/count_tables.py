"""Count tables over the schema's public bins: which cell of which table a record falls in.

Both count releases a node makes use this layout: the marginals family's column
and pair tables and the federated evaluation's tables. Every cell boundary is a
function of the public schema alone (fine bins of each column's declared range)
or of earlier DP outputs (coarse bins cut at quantiles of noisy column tables,
`MarginalLayout.with_groups`), never of a site's records, so the layout itself
leaks nothing; one record falls in exactly one cell of every table, which is
what gives each table L2 sensitivity 1 under add/remove-one-record.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocols.encoding import TableEncoding, build_encoding, scale, unscale
from protocols.schema import Column, Schema

FINE_BINS = 32  # per bounded column, for its own distribution (fewer for short integer ranges)
COARSE_BINS = 4  # per bounded column, inside the pair tables
BIN_POWER = 2.0  # fine bin edges (i / K) ** 2 of the declared range: fine where skewed values sit
# In every count release a pair table is this much noisier than a column table: the
# budget favours the columns, which every score and sampler leans on most.
PAIR_NOISE_RATIO = 3.0


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
