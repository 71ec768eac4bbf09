"""What a site releases in federated evaluation: noisy count tables, once per study.

A score computed on a site's records (1 − KS of a column, an exact-copy share,
an AUC) moves with a single patient and is no DP release: a node that returned
such scores answered membership questions for free. Instead a node releases,
once per study and charged to its ledger, a few count tables of its own
records, each cell with discrete Gaussian noise; the coordinator computes every
federated score from the tables summed over sites (`protocols.evaluation.
federated`), which is post-processing.

The tables (every one a pure function of the public schema and, for the
utility table, of the released cohort):
- `1|col`: each modelled column on up to `COLUMN_BINS` bins of its declared
  range, or its categories (column shapes, category shares for the bias flags);
- `2|a|b`: each pair of columns on the marginals' coarse bins (pairwise
  structure, the associations behind "strong associations kept");
- `T|target|k`: for a categorical or boolean target, a model trained on the
  released cohort (public) scores each of the site's records; the table counts
  records by score decile for class k against the true label (class k, another
  class, missing), from which the coordinator reads a TSTR AUC. For a numeric
  target, `T|target` counts records by absolute error bin (TSTR MAE);
- `S|time|event`: records by time bin and event (event, censored, missing), for
  a Kaplan–Meier curve.

Every record falls in exactly one cell of every table (a missing value has its
own cell), so adding or removing a record moves each table by one count in one
cell. With noise N_Z(0, σ_t²) on every cell of table t, the release is a
Gaussian mechanism of multiplier z = (Σ_t σ_t⁻²)^(-1/2) (Rényi curves add up),
where z is the evaluation multiplier of `protocols.privacy.accounting` (the release
alone is `evaluation_epsilon`-DP), composed with the study's other releases in
the site's ledger. Pair tables, the most numerous, get `PAIR_NOISE_RATIO`
times the noise of the others, as in the marginals family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge

from protocols.count_tables import (PAIR_NOISE_RATIO, MarginalLayout, build_layout,
                                    group_fine_bins, one_name, value_bins)
from protocols.encoding import build_encoding
from protocols.evaluation.survival import event_indicator
from protocols.evaluation.utility import design_matrix
from protocols.plan import StudyPlan
from protocols.privacy.accounting import evaluation_release
from protocols.privacy.dp_noise import discrete_gaussian
from protocols.schema import Column, Schema

COLUMN_BINS = 8  # per bounded column: enough for its shape, few enough to rise above the noise
SCORE_BINS = 10  # deciles of a predicted probability
ERROR_BINS = 16  # absolute error, in sixteenths of the target's declared range
LABEL_CELLS = 3  # the class itself, another class, missing label
EVENT_CELLS = 3  # censored, event, missing


@dataclass(frozen=True)
class EvaluationLayout:
    """The evaluation tables of a schema: names, shapes, and how records fall in them."""

    schema: Schema
    marginals: MarginalLayout

    @property
    def target(self) -> Column | None:
        name = self.schema.roles.target
        return self.schema.column(name) if name else None

    @property
    def survival(self) -> tuple[Column, Column] | None:
        pair = self.schema.roles.survival
        return (self.schema.column(pair[0]), self.schema.column(pair[1])) if pair else None

    def column_size(self, col: Column) -> int:
        return column_bins(col) + (1 if col.nullable else 0)

    def table_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {one_name(c): (self.column_size(c),) for c in self.schema.features}
        shapes.update((name, shape) for name, shape in self.marginals.table_shapes().items()
                      if not name.startswith("1|"))
        target = self.target
        if target is not None and target.is_discrete:
            for k in _scored_classes(target):
                shapes[utility_name(target, k)] = (SCORE_BINS, LABEL_CELLS)
        elif target is not None:
            shapes[utility_name(target)] = (ERROR_BINS + 1,)
        if self.survival is not None:
            time, event = self.survival
            shapes[survival_name(time, event)] = (column_bins(time), EVENT_CELLS)
        return shapes

    def counts(self, parsed: pd.DataFrame, cohort: pd.DataFrame) -> dict[str, np.ndarray]:
        """Exact counts of every table on `parsed` (never leaves the node without noise);
        `cohort` is the released cohort the utility model is trained on."""
        tables = self.description_counts(parsed)
        if self.target is not None:
            tables.update(_utility_counts(self.schema, self.target, parsed, cohort))
        return tables

    def description_counts(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The tables that describe `frame` itself (all but the utility tables): what the
        coordinator also computes on the cohort, to compare."""
        fine = self.marginals.fine_codes(frame)
        tables = {one_name(c): np.bincount(column_code(c, fine[c.name]),
                                           minlength=self.column_size(c)).astype(float)
                  for c in self.schema.features}
        tables.update(self.marginals.pair_counts(frame))
        if self.survival is not None:
            tables[survival_name(*self.survival)] = self._survival_counts(frame, fine)
        return tables

    def _survival_counts(self, frame: pd.DataFrame, fine: dict[str, np.ndarray]) -> np.ndarray:
        time, event = self.survival
        events = event_indicator(frame[event.name])
        unknown = np.isnan(events) | frame[time.name].isna().to_numpy()
        cell = np.where(unknown, 2, np.nan_to_num(events)).astype(int)
        row = np.where(unknown, 0, np.minimum(column_code(time, fine[time.name]),
                                              column_bins(time) - 1))
        table = np.zeros((column_bins(time), EVENT_CELLS))
        np.add.at(table, (row, cell), 1.0)
        return table


def evaluation_layout(schema: Schema) -> EvaluationLayout:
    return EvaluationLayout(schema, build_layout(schema))


def column_bins(col: Column) -> int:
    """Value bins of a column table: its categories, or up to `COLUMN_BINS` groups of
    the marginals' fine bins (a pure function of the schema)."""
    bins = value_bins(col)
    return bins if col.is_discrete else min(COLUMN_BINS, bins)


def column_code(col: Column, fine: np.ndarray) -> np.ndarray:
    """A column-table cell from a marginals fine code (missing keeps its own cell)."""
    return group_fine_bins(col, fine, column_bins(col))


def utility_name(target: Column, k: int | None = None) -> str:
    return f"T|{target.name}" if k is None else f"T|{target.name}|{k}"


def survival_name(time: Column, event: Column) -> str:
    return f"S|{time.name}|{event.name}"


def cell_sigmas(layout: EvaluationLayout, plan: StudyPlan) -> dict[str, float]:
    """σ of the discrete Gaussian on each table's cells, so that Σ_t σ_t⁻² = z⁻² for the
    plan's evaluation multiplier z; pair tables `PAIR_NOISE_RATIO` times noisier."""
    release = evaluation_release(plan)
    names = list(layout.table_shapes())
    if release is None:
        return {name: 0.0 for name in names}
    pairs = sum(1 for name in names if name.startswith("2|"))
    base = release.noise_multiplier * math.sqrt(len(names) - pairs
                                                 + pairs / PAIR_NOISE_RATIO ** 2)
    return {name: base * (PAIR_NOISE_RATIO if name.startswith("2|") else 1.0) for name in names}


def noisy_evaluation_tables(layout: EvaluationLayout, plan: StudyPlan, parsed: pd.DataFrame,
                            cohort: pd.DataFrame) -> dict[str, np.ndarray]:
    """The site's evaluation release: every table plus integer noise from a CSPRNG,
    float64 arrays of whole numbers."""
    sigmas = cell_sigmas(layout, plan)
    return {name: discrete_gaussian(table, sigmas[name]).astype(np.float64)
            for name, table in layout.counts(parsed, cohort).items()}


def _scored_classes(target: Column) -> list[int]:
    """Binary: one table (the second class); more classes: one table per class."""
    return [1] if len(target.categories) == 2 else list(range(len(target.categories)))


def _utility_counts(schema: Schema, target: Column, parsed: pd.DataFrame,
                    cohort: pd.DataFrame) -> dict[str, np.ndarray]:
    encoding = build_encoding(schema)
    x_real = design_matrix(encoding, parsed, {target.name})
    labelled = cohort[cohort[target.name].notna()].reset_index(drop=True)
    x_train = design_matrix(encoding, labelled, {target.name})
    truth = parsed[target.name]
    if not target.is_discrete:
        return {utility_name(target): _error_counts(target, labelled, x_train, x_real, truth)}
    index = {label: i for i, label in enumerate(target.categories)}
    y_train = labelled[target.name].map(index).to_numpy(int)
    proba = _class_probabilities(x_train, y_train, x_real, len(target.categories))
    label = truth.map(index).to_numpy(dtype=float)
    tables = {}
    # Every record in exactly one cell whatever the model outputs (a NaN would otherwise
    # pick a cell, or fail, depending on one record).
    proba = np.nan_to_num(proba, nan=0.0, posinf=1.0, neginf=0.0)
    for k in _scored_classes(target):
        score_bin = np.clip(np.floor(proba[:, k] * SCORE_BINS), 0, SCORE_BINS - 1).astype(int)
        cell = np.where(np.isnan(label), 2, np.where(label == k, 0, 1))
        table = np.zeros((SCORE_BINS, LABEL_CELLS))
        np.add.at(table, (score_bin, cell), 1.0)
        tables[utility_name(target, k)] = table
    return tables


def _class_probabilities(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                         n_classes: int) -> np.ndarray:
    """P(class) for each test row from a logistic regression on the cohort; a cohort
    with fewer than two classes gives its class frequencies (no model can rank)."""
    proba = np.zeros((len(x_test), n_classes))
    present = np.unique(y_train)
    if len(present) < 2:
        for k in present:
            proba[:, k] = 1.0
        return proba if len(present) else np.full((len(x_test), n_classes), 1.0 / n_classes)
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def _error_counts(target: Column, labelled: pd.DataFrame, x_train: np.ndarray,
                  x_real: np.ndarray, truth: pd.Series) -> np.ndarray:
    span = float(target.high - target.low) or 1.0
    if len(labelled):
        model = Ridge(alpha=1.0).fit(x_train, labelled[target.name].to_numpy(float))
        predicted = model.predict(x_real)
    else:
        predicted = np.full(len(x_real), (target.low + target.high) / 2.0)
    error = np.abs(predicted - truth.to_numpy(dtype=float)) / span
    cell = np.where(np.isnan(error), ERROR_BINS,
                    np.clip(np.floor(np.nan_to_num(error) * ERROR_BINS), 0, ERROR_BINS - 1))
    return np.bincount(cell.astype(int), minlength=ERROR_BINS + 1).astype(float)

