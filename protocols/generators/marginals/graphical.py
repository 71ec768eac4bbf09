"""Fit one graphical model to the sites' pooled noisy tables (private-pgm) and sample from it.

Everything here is post-processing of the sites' DP releases
(`protocols.generators.marginals.tables`). The model is the maximum-entropy
distribution over the columns' coarse bins whose column and pair marginals are
closest, in noise-weighted least squares, to the noisy tables: McKenna, Sheldon
& Miklau, "Graphical-model based estimation and inference for differential
privacy" (ICML 2019), fitted with their library `mbi` (private-pgm 2.0, mirror
descent). It is the inference step of MST and AIM. Unlike the Chow–Liu tree it
replaces, which kept n − 1 of the pairs, it uses every measured pair the model
size allows, and it reconciles noisy tables that disagree with one another
instead of trusting whichever it reads last. benchmarks/RESULTS.md measures both.

Which pairs enter the model: first every pair with one of the schema's outcome
columns (its evaluation target and survival pair: public, declared before any
data), then the rest; each group strongest first, by the mutual information of
their noisy tables (a released value), for as long as the model's junction tree
stays under `MAX_MODEL_CELLS` (most of them on the benchmark's schemas). A study
predicts its outcome from the other columns, so those are the pairs a cohort
must not lose to the cap: on the benchmark's registry and rare splits, at ε = 3,
putting them first raised TSTR from 0.908 to 0.926 and 0.862 to 0.908, and the
Cox hazard-ratio directions kept from 0.90 to 0.95 and 0.65 to 0.70, over the
same 5 noisy releases each (benchmarks/RESULTS.md).
Records are drawn clique by clique along the junction tree, each given the bins
already drawn, then each column's fine bin inside its coarse bin from its own
column table, then a value inside the fine bin (`count_tables.fine_to_encoded`).

Only the coordinator fits a model; `mbi` and JAX are imported here, never at a node.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocols.count_tables import PAIR_NOISE_RATIO, MarginalLayout, fine_to_encoded, one_name, \
    pair_name
from protocols.schema import Column

# Cells of the model's junction tree (float64: 0.5 MB; the private-pgm authors' AIM allows
# 80 MB). Fitting costs cells × iterations: on 2 cores a 10⁶-cell model took 2 minutes, and
# on the benchmark's splits 2¹⁴ to 2¹⁸ cells and 300 iterations scored alike (RESULTS.md).
MAX_MODEL_CELLS = 2**16
FIT_ITERATIONS = 300
_SMOOTHING = 1e-3  # keeps every declared value possible where the noise left nothing


@dataclass(frozen=True)
class Measured:
    """A noisy table on `clique`'s coarse bins (axes in its order), carrying `noise_ratio`
    times a column cell's noise."""

    clique: tuple[str, ...]
    table: np.ndarray
    noise_ratio: float


@dataclass(frozen=True)
class GraphicalModel:
    """A fitted model, ready to sample: its cliques in drawing order and each clique's
    distribution (axes in the clique's order), plus the clipped column tables that place
    a record inside its coarse bins."""

    layout: MarginalLayout
    column_tables: dict[str, np.ndarray]
    pairs: tuple[tuple[str, str], ...]  # the measured pairs the model was fitted to
    cliques: tuple[tuple[str, ...], ...]
    distributions: tuple[np.ndarray, ...]


def fit_model(layout: MarginalLayout, tables: Mapping[str, np.ndarray],
              max_cells: int = MAX_MODEL_CELLS, pair_noise_ratio: float = PAIR_NOISE_RATIO,
              extra: Sequence[Measured] = (), outcome: Collection[str] = ()) -> GraphicalModel:
    """The model of `tables` (column tables on fine bins, pair tables on `layout`'s coarse
    bins, as the sites' pooled release holds them), whose pair tables carry
    `pair_noise_ratio` times a column cell's noise. `extra`: further coarse tables (a pair
    measured again, a 3-way table), each with its noise ratio; they enter the model before
    any pair (benchmarks/workload.py measures such designs). `outcome`: the columns whose
    pairs enter the model first (the schema's `roles.columns`)."""
    mbi = _mbi()
    columns = layout.columns
    domain = mbi.Domain([c.name for c in columns], [layout.coarse_size(c) for c in columns])
    pairs = _chosen_pairs(mbi, domain, columns, tables, max_cells, frozenset(outcome),
                          [m.clique for m in extra])
    measurements = [_column_measurement(mbi, layout, c, tables[one_name(c)]) for c in columns]
    for a, b in itertools.combinations(columns, 2):
        if (a.name, b.name) in pairs:
            measurements.append(mbi.LinearMeasurement(
                np.asarray(tables[pair_name(a, b)], dtype=float).ravel(), (a.name, b.name),
                stddev=pair_noise_ratio))
    measurements += [mbi.LinearMeasurement(np.asarray(m.table, dtype=float).ravel(), m.clique,
                                           stddev=m.noise_ratio) for m in extra]
    fitted = mbi.estimation.MirrorDescent().estimate(domain, measurements,
                                                      iters=FIT_ITERATIONS)
    tree, _ = mbi.junction_tree.make_junction_tree(domain, [tuple(c) for c in fitted.cliques])
    cliques = _drawing_order(tree)
    # The junction tree's clique marginals by message passing (projecting each from the
    # fitted pair cliques instead runs variable elimination per clique: minutes, not seconds).
    marginals = mbi.marginal_oracles.message_passing_stable(
        fitted.potentials.expand(list(tree.nodes)), fitted.total)
    distributions = tuple(_distribution(marginals.project(clique), clique) for clique in cliques)
    # Each fit compiles its own programs (their shapes are the schema's); a process that fits
    # many models (a benchmark, a long-lived coordinator) would otherwise keep every one
    # mapped until LLVM runs out of mappable memory.
    _jax().clear_caches()
    column_tables = {one_name(c): np.clip(np.asarray(tables[one_name(c)], dtype=float), 0.0, None)
                     for c in columns}
    return GraphicalModel(layout, column_tables, tuple(pairs), cliques, distributions)


def sample_model(model: GraphicalModel, rows: int, seed: int) -> pd.DataFrame:
    """`rows` records decoded to exactly the schema's columns and types."""
    layout, rng = model.layout, np.random.default_rng(seed)
    coarse: dict[str, np.ndarray] = {}
    for clique, distribution in zip(model.cliques, model.distributions):
        given = [name for name in clique if name in coarse]
        new = [name for name in clique if name not in coarse]
        if not new:
            continue
        order = [clique.index(name) for name in given + new]
        table = np.transpose(distribution, order)
        given_size = int(np.prod(table.shape[:len(given)], dtype=np.int64))
        conditional = table.reshape(given_size, -1)
        row = (np.ravel_multi_index([coarse[name] for name in given], table.shape[:len(given)])
               if given else np.zeros(rows, dtype=np.int64))
        drawn = _draw_rows(rng, conditional, row)
        for name, codes in zip(new, np.unravel_index(drawn, table.shape[len(given):])):
            coarse[name] = codes.astype(int)
    fine = {c.name: _refine(layout, c, coarse[c.name], model.column_tables[one_name(c)], rng)
            for c in layout.columns}
    return layout.encoding.decode(fine_to_encoded(layout, fine, rng))


def model_cells(mbi, domain, cliques) -> int:
    """Cells of the junction tree a model over `cliques` needs."""
    tree, _ = mbi.junction_tree.make_junction_tree(domain, cliques)
    return sum(domain.size(clique) for clique in mbi.junction_tree.maximal_cliques(tree))


def _mbi():
    """private-pgm with JAX in float64 (its own advice for estimation), imported late so
    that a node never loads it."""
    jax = _jax()
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mbi
    return mbi


def _jax():
    import jax
    return jax


def _chosen_pairs(mbi, domain, columns: tuple[Column, ...], tables: Mapping[str, np.ndarray],
                  max_cells: int, outcome: frozenset[str],
                  held: Sequence[tuple[str, ...]] = ()) -> list[tuple[str, str]]:
    """The pairs the model holds besides the cliques `held` already: those with an
    `outcome` column first, then the rest, each group by strongest noisy mutual
    information, while the junction tree stays under `max_cells`."""
    ranked = sorted(itertools.combinations(columns, 2), key=lambda ab: (
        not {ab[0].name, ab[1].name} & outcome,
        -_mutual_information(np.asarray(tables[pair_name(*ab)]))))
    chosen: list[tuple[str, str]] = []
    base = [(c.name,) for c in columns] + list(held)
    for a, b in ranked:
        trial = chosen + [(a.name, b.name)]
        if model_cells(mbi, domain, base + trial) <= max_cells:
            chosen = trial
    return chosen


def _column_measurement(mbi, layout: MarginalLayout, col: Column, fine: np.ndarray):
    """A column's fine table summed into its coarse bins: a coarse cell of k fine cells
    carries k times a fine cell's noise variance (on average over the column's cells)."""
    groups = layout.coarse(col, np.arange(layout.fine_size(col)))
    size = layout.coarse_size(col)
    summed = np.bincount(groups, weights=np.asarray(fine, dtype=float), minlength=size)
    width = np.bincount(groups, minlength=size)
    return mbi.LinearMeasurement(summed, (col.name,), stddev=math.sqrt(width.mean()))


def _drawing_order(tree) -> tuple[tuple[str, ...], ...]:
    """The junction tree's cliques, each after a neighbour it shares its separator with."""
    import networkx as nx  # mbi's own graph library, loaded with it

    order: list[tuple[str, ...]] = []
    for root in sorted(min(component) for component in nx.connected_components(tree)):
        order.append(tuple(root))
        order += [tuple(child) for _, child in nx.bfs_edges(tree, root, sort_neighbors=sorted)]
    return tuple(order)


def _distribution(factor, clique: tuple[str, ...]) -> np.ndarray:
    """`factor`'s counts as probabilities, axes in `clique`'s order, every cell possible."""
    values = np.asarray(factor.datavector(flatten=False), dtype=float)
    axes = [list(factor.domain.attributes).index(name) for name in clique]
    table = np.clip(np.transpose(values, axes), 0.0, None)
    return table / max(table.sum(), 1e-300)


def _draw_rows(rng: np.random.Generator, conditional: np.ndarray, row: np.ndarray) -> np.ndarray:
    """For each record, a column of `conditional[row]` in proportion to its weights
    (inverse CDF on every row at once)."""
    weights = conditional + 1e-12
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    width = conditional.shape[1]
    stacked = (cdf + np.arange(len(cdf))[:, None]).ravel()
    position = np.searchsorted(stacked, row + rng.random(len(row)), side="right")
    return np.minimum(position - row * width, width - 1)


def _refine(layout: MarginalLayout, col: Column, coarse: np.ndarray, column_table: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """A fine bin inside each drawn coarse bin, in proportion to the column's own table."""
    members = layout.coarse(col, np.arange(layout.fine_size(col)))
    out = np.empty(len(coarse), dtype=int)
    for value in np.unique(coarse):
        where = np.flatnonzero(coarse == value)
        inside = np.flatnonzero(members == value)
        weights = column_table[inside] + _SMOOTHING
        out[where] = inside[rng.choice(len(inside), size=len(where), p=weights / weights.sum())]
    return out


def _mutual_information(table: np.ndarray) -> float:
    clipped = np.clip(np.asarray(table, dtype=float), 0.0, None)
    total = clipped.sum()
    if total <= 0:
        return 0.0
    p = clipped / total
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / outer[mask])))
