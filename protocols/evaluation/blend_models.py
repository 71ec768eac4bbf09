"""The models the blending advisor scores on each split, and what they score.

A task is one outcome to predict: the schema's discrete target (scikit-learn
logistic regression: ROC AUC, macro one-vs-rest beyond two classes, and Brier
score), its numeric target (ridge regression: mean absolute error) or its
survival pair (a penalised lifelines Cox model: Harrell's concordance index).
Features are every other modelled column in the schema's own encoding
(`utility.design_matrix`); the Cox model, which has no intercept, codes each
category against its first declared level, as the survival agreement does.
`protocols.evaluation.blend` runs these on every split at every ratio.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.utils import concordance_index
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, roc_auc_score

from protocols.encoding import TableEncoding
from protocols.evaluation.survival import event_indicator
from protocols.schema import Schema

COX_PENALIZER = 0.01  # as in the survival agreement: a rare level still converges
MODELS = {"classification": "scikit-learn LogisticRegression (lbfgs, C=1, max_iter=2000)",
          "regression": "scikit-learn Ridge (alpha=1)",
          "survival": f"lifelines CoxPHFitter (penalizer {COX_PENALIZER})"}


@dataclass(frozen=True)
class Task:
    """One outcome to predict (its columns are left out of the features), and how."""

    kind: str
    columns: tuple[str, ...]
    classes: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        return " / ".join(self.columns)


def target_task(schema: Schema, target: str) -> Task:
    col = schema.column(target)
    if col.is_discrete:
        return Task("classification", (target,), col.categories)
    return Task("regression", (target,))


def features(encoding: TableEncoding, task: Task) -> np.ndarray:
    """Which of the design matrix's columns the task's model sees: all of them, except
    that the Cox model (which has no intercept) codes each category against its first
    declared level, as the survival agreement does; a full one-hot block sums to a
    constant, which leaves a Cox fit ill-conditioned and slow to converge."""
    blocks = [b for b in encoding.blocks if b.column not in task.columns]
    offsets = np.cumsum([0] + [b.width for b in blocks])
    keep = np.ones(offsets[-1], dtype=bool)
    if task.kind == "survival":
        keep[[offset for b, offset in zip(blocks, offsets) if b.kind == "onehot"]] = False
    return np.flatnonzero(keep)


METRICS = {"classification": (("AUC", True), ("Brier score", False)),
            "regression": (("MAE", False),),
            "survival": (("concordance index", True),)}


def outcome_columns(task: Task, frame: pd.DataFrame) -> np.ndarray:
    """The outcome as the last column(s) of a row: class index, value, or (time, event)."""
    if task.kind == "classification":
        labels = {c: i for i, c in enumerate(task.classes)}
        return frame[task.columns[0]].map(labels).to_numpy(float)
    if task.kind == "regression":
        return frame[task.columns[0]].to_numpy(float)
    time, event = task.columns
    return np.column_stack([frame[time].to_numpy(float), event_indicator(frame[event])])


def scores(task: Task, train: np.ndarray, test: np.ndarray) -> tuple[float, ...]:
    if task.kind == "survival":
        return (_concordance(train, test),)
    x_train, y_train, x_test, y_test = train[:, :-1], train[:, -1], test[:, :-1], test[:, -1]
    if task.kind == "regression":
        model = Ridge(alpha=1.0).fit(x_train, y_train)
        return (float(mean_absolute_error(y_test, model.predict(x_test))),)
    y_train, y_test = y_train.astype(int), y_test.astype(int)
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    proba = np.zeros((len(x_test), len(task.classes)))
    proba[:, model.classes_] = model.predict_proba(x_test)
    brier = np.mean(np.sum((proba - np.eye(len(task.classes))[y_test]) ** 2, axis=1))
    present = np.unique(y_test)
    ranked = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
    auc = (roc_auc_score(y_test == present[1], ranked[:, 1]) if len(present) == 2 else
           roc_auc_score(y_test, ranked, multi_class="ovr", labels=present))
    return float(auc), float(brier / 2 if len(task.classes) == 2 else brier)


def _concordance(train: np.ndarray, test: np.ndarray) -> float:
    """Harrell's C of a Cox model fitted on `train`, on `test`; NaN where the fold has no
    comparable pair or the fit fails."""
    varying = np.flatnonzero(train[:, :-2].std(axis=0) > 0)
    names = [f"x{i}" for i in varying]
    frame = pd.DataFrame(train[:, varying], columns=names).assign(time=train[:, -2],
                                                                  event=train[:, -1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CoxPHFitter(penalizer=COX_PENALIZER).fit(frame, "time", "event")
        hazard = model.predict_partial_hazard(pd.DataFrame(test[:, varying], columns=names))
        return float(concordance_index(test[:, -2], -hazard, test[:, -1]))
    except (ConvergenceError, ZeroDivisionError, np.linalg.LinAlgError):
        return float("nan")
