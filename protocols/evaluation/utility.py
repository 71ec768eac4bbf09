"""Utility: does a model trained on the cohort predict real outcomes?

Train-on-synthetic-test-on-real (TSTR) against train-on-real-test-on-real
(TRTR) for the schema's declared target, with the same model and features:
- a categorical or boolean target: logistic regression, scored by ROC AUC
  (macro one-vs-rest for more than two classes); ratio = AUC_TSTR / AUC_TRTR;
- a numeric target: ridge regression, scored by mean absolute error;
  ratio = MAE_TRTR / MAE_TSTR (1 is parity, lower is worse).
Features are every other modelled column, encoded by the schema's own
data-independent encoding (scaled numbers, one-hot categories, missingness
flags). With a holdout of real records, both models are tested on it; without
one, TRTR is 5-fold cross-validation on the real records and TSTR is tested on
all of them. A score with no labelled record to train or test on (or, for AUC,
a test set with one class) is undefined, and so is the ratio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from protocols.encoding import TableEncoding, build_encoding
from protocols.schema import Schema

FOLDS = 5


def design_matrix(encoding: TableEncoding, frame: pd.DataFrame, leave_out: set[str]) -> np.ndarray:
    """The encoded features of `frame` without the columns in `leave_out`."""
    encoded = encoding.encode(frame)
    keep = [i for b in encoding.blocks if b.column not in leave_out
            for i in range(b.start, b.stop)]
    return encoded[:, keep].astype(float)


def tstr(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
         holdout: pd.DataFrame | None, target: str, seed: int) -> dict:
    """TRTR, TSTR and their ratio for `target` (see the module docstring)."""
    col = schema.column(target)
    encoding = build_encoding(schema)
    data = {name: _xy(encoding, frame, target, col.is_discrete, col.categories)
            for name, frame in (("real", real), ("synthetic", synthetic), ("holdout", holdout))
            if frame is not None}
    classes = np.arange(len(col.categories)) if col.is_discrete else None
    task = "classification" if col.is_discrete else "regression"
    x_real, y_real = data["real"]
    if holdout is not None:
        x_test, y_test = data["holdout"]
        trtr = (_score(task, classes, x_real, y_real, x_test, y_test) if len(y_real)
                else float("nan"))  # no labelled real record: no reference model
        protocol = "both models tested on the held-out real records"
    else:
        x_test, y_test = x_real, y_real
        trtr = _cross_validated(task, classes, x_real, y_real, seed)
        protocol = (f"TRTR: {FOLDS}-fold cross-validation on the real records; "
                    "TSTR: trained on the cohort, tested on all real records")
    tstr_score = _score(task, classes, *data["synthetic"], x_test, y_test)
    return {"target": target, "task": task, "metric": "AUC" if classes is not None else "MAE",
            "model": "logistic regression" if classes is not None else "ridge regression",
            "trtr": trtr, "tstr": tstr_score, "ratio": _ratio(task, trtr, tstr_score),
            "protocol": protocol}


def _ratio(task: str, trtr: float, tstr_score: float) -> float | None:
    """TSTR relative to TRTR, 1 at parity; None where either score is undefined."""
    if not (np.isfinite(trtr) and np.isfinite(tstr_score)):
        return None
    if task == "classification":
        return tstr_score / trtr if trtr > 0 else None
    return trtr / tstr_score if tstr_score > 0 else (1.0 if trtr == 0 else None)


def _xy(encoding: TableEncoding, frame: pd.DataFrame, target: str, discrete: bool,
        categories: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    labelled = frame[frame[target].notna()].reset_index(drop=True)
    x = design_matrix(encoding, labelled, {target})
    if discrete:
        y = labelled[target].map({c: i for i, c in enumerate(categories)}).to_numpy(int)
    else:
        y = labelled[target].to_numpy(float)
    return x, y


def _score(task: str, classes: np.ndarray | None, x_train: np.ndarray, y_train: np.ndarray,
           x_test: np.ndarray, y_test: np.ndarray) -> float:
    if len(y_test) == 0:
        return float("nan")  # no labelled record to test on
    if task == "regression":
        if len(y_train) == 0:
            return float(np.mean(np.abs(y_test - np.median(y_test))))  # no model: the worst case
        model = Ridge(alpha=1.0).fit(x_train, y_train)
        return float(mean_absolute_error(y_test, model.predict(x_test)))
    present = np.unique(y_test)
    if len(present) < 2:
        return float("nan")  # AUC is undefined on a test set with one class
    if len(np.unique(y_train)) < 2:
        return 0.5  # a model that saw one class cannot rank: chance
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    proba = np.zeros((len(x_test), len(classes)))
    proba[:, model.classes_] = model.predict_proba(x_test)
    if len(classes) == 2:
        return float(roc_auc_score(y_test, proba[:, 1]))
    proba = proba[:, present] + 1e-12
    proba /= proba.sum(axis=1, keepdims=True)
    return float(roc_auc_score(y_test, proba, multi_class="ovr", average="macro",
                               labels=present))


def _cross_validated(task: str, classes: np.ndarray | None, x: np.ndarray, y: np.ndarray,
                     seed: int) -> float:
    if task == "classification":
        counts = np.unique(y, return_counts=True)[1]
        if len(counts) < 2 or counts.min() < 2:
            return float("nan")  # too few records of a class to cross-validate an AUC
        splitter = StratifiedKFold(n_splits=min(FOLDS, int(counts.min())), shuffle=True,
                                   random_state=seed)
    else:
        if len(y) < 2:
            return float("nan")  # too few labelled records to cross-validate
        splitter = KFold(n_splits=min(FOLDS, len(y)), shuffle=True, random_state=seed)
    scores = [_score(task, classes, x[tr], y[tr], x[te], y[te]) for tr, te in splitter.split(x, y)]
    return float(np.nanmean(scores))
