"""Fit a Chow–Liu tree on the sites' averaged noisy tables and sample a cohort from it.

Everything here is post-processing of the sites' DP releases
(`protocols.generators.marginals.tables`): negative noisy counts are clipped to zero, the pair
tables' mutual information picks a maximum spanning tree over the columns
(the best tree-shaped approximation of the joint distribution, Chow & Liu
1968), and records are drawn root first, each column given its parent: the
child's coarse bin from the pair table, then its fine bin from its own
column table restricted to that coarse bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocols.count_tables import fine_to_encoded, one_name, pair_name
from protocols.generators.marginals.tables import MarginalLayout
from protocols.schema import Column

_SMOOTHING = 1e-3  # keeps every declared value possible where the noise left nothing


@dataclass(frozen=True)
class TreeModel:
    layout: MarginalLayout
    tables: dict[str, np.ndarray]  # clipped, non-negative
    edges: tuple[tuple[str, str], ...]  # (parent, child), root first

    def pair(self, parent: Column, child: Column) -> np.ndarray:
        """The (parent, child) coarse table, whichever order it was released in."""
        names = [c.name for c in self.layout.columns]
        if names.index(parent.name) < names.index(child.name):
            return self.tables[pair_name(parent, child)]
        return self.tables[pair_name(child, parent)].T


def fit_tree(layout: MarginalLayout, tables: Mapping[str, np.ndarray]) -> TreeModel:
    clipped = {name: np.clip(np.asarray(t, dtype=float), 0.0, None) for name, t in tables.items()}
    columns = layout.columns
    weights = {}
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            weights[(a.name, b.name)] = _mutual_information(clipped[pair_name(a, b)])
    in_tree, edges = {columns[0].name}, []
    while len(in_tree) < len(columns):
        (a, b), _ = max(((pair, w) for pair, w in weights.items()
                         if (pair[0] in in_tree) != (pair[1] in in_tree)), key=lambda x: x[1])
        parent, child = (a, b) if a in in_tree else (b, a)
        edges.append((parent, child))
        in_tree.add(child)
    return TreeModel(layout=layout, tables=clipped, edges=tuple(edges))


def sample_tree(model: TreeModel, rows: int, seed: int) -> pd.DataFrame:
    """`rows` records decoded to exactly the schema's columns and types."""
    layout, rng = model.layout, np.random.default_rng(seed)
    by_name = {c.name: c for c in layout.columns}
    root = layout.columns[0]
    fine = {root.name: _draw(rng, model.tables[one_name(root)], rows)}
    for parent_name, child_name in model.edges:
        parent, child = by_name[parent_name], by_name[child_name]
        parent_coarse = layout.coarse(parent, fine[parent.name])
        table = model.pair(parent, child) + _SMOOTHING
        child_coarse = np.empty(rows, dtype=int)
        for value in np.unique(parent_coarse):
            where = np.flatnonzero(parent_coarse == value)
            child_coarse[where] = _draw(rng, table[value], len(where))
        fine[child.name] = _refine(layout, child, child_coarse, model.tables[one_name(child)], rng)
    encoded = fine_to_encoded(layout, fine, rng)
    return layout.encoding.decode(encoded)


def _refine(layout: MarginalLayout, col: Column, coarse: np.ndarray, column_table: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """A fine bin inside each drawn coarse bin, in proportion to the column's own table."""
    members = layout.coarse(col, np.arange(layout.fine_size(col)))
    out = np.empty(len(coarse), dtype=int)
    for value in np.unique(coarse):
        where = np.flatnonzero(coarse == value)
        inside = np.flatnonzero(members == value)
        out[where] = inside[_draw(rng, column_table[inside] + _SMOOTHING, len(where))]
    return out


def _draw(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float) + 1e-12
    return rng.choice(len(p), size=n, p=p / p.sum())


def _mutual_information(table: np.ndarray) -> float:
    total = table.sum()
    if total <= 0:
        return 0.0
    p = table / total
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / outer[mask])))
