"""How many synthetic records should a site mix into its own training set?

With scarce real data, adding synthetic records can help a model; past some
share it learns the generator's quirks and error climbs again (a U-shaped
curve). `blend_curve` measures that curve on the site's own patients:
- ratios of synthetic to real training records from `RATIO_GRID`, capped by the
  cohort's size (`ratio_grid`);
- repeated stratified k-fold over the REAL records only: every test fold holds
  real records only, and a split's synthetic records join its training fold,
  never its test fold (`make_folds`, `training_and_test`);
- the schema's target: logistic regression scored by ROC AUC (macro one-vs-rest
  for more than two classes) and Brier score (the binary one for two classes,
  summed over classes otherwise) for a discrete target, ridge regression scored by
  mean absolute error for a numeric one; the survival pair: a penalised Cox model
  scored by Harrell's concordance index. Features are every other modelled column
  in the schema's own encoding (`utility.design_matrix`), as for the utility
  score; the Cox model codes categories against their first declared level.
The recommended ratio follows the one-standard-error rule: the smallest ratio
whose mean score is within one standard error of the best ratio's mean. The
standard error is over the repeated splits, which share records, so it
understates the true uncertainty.

Everything is seeded (`seed` fixes the folds and which synthetic records each
split draws), so a run replays exactly. A record whose outcome (target, survival
time or event) is missing is left out, real or synthetic. The result stays at the
site: it is computed from its records and is not a DP release.
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
from sklearn.model_selection import RepeatedStratifiedKFold

from protocols.encoding import TableEncoding, build_encoding
from protocols.errors import FedsynthError
from protocols.evaluation.survival import event_indicator
from protocols.evaluation.utility import design_matrix
from protocols.schema import Schema

RATIO_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
FOLDS = 5
REPEATS = 5
COX_PENALIZER = 0.01  # as in the survival agreement: a rare level still converges
MODELS = {"classification": "scikit-learn LogisticRegression (lbfgs, C=1, max_iter=2000)",
          "regression": "scikit-learn Ridge (alpha=1)",
          "survival": f"lifelines CoxPHFitter (penalizer {COX_PENALIZER})"}


@dataclass(frozen=True)
class Fold:
    """One train/test split of the real records, and the order in which this split
    draws synthetic records (the first `count` of them join its training fold)."""

    repeat: int
    train: np.ndarray
    test: np.ndarray
    synthetic_order: np.ndarray


@dataclass(frozen=True)
class Curve:
    """One metric's scores, one row per ratio, one column per split."""

    metric: str
    outcome: str
    model: str
    higher_is_better: bool
    scores: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return np.nanmean(self.scores, axis=1)

    @property
    def sd(self) -> np.ndarray:
        return np.nanstd(self.scores, axis=1, ddof=1)

    @property
    def se(self) -> np.ndarray:
        return self.sd / np.sqrt(np.isfinite(self.scores).sum(axis=1))


@dataclass(frozen=True)
class Recommendation:
    """The ratio advised for one outcome, by its headline metric, and why."""

    outcome: str
    metric: str
    ratio: float
    best_ratio: float
    rule: str

    def to_json(self) -> dict:
        return {"outcome": self.outcome, "metric": self.metric, "ratio": self.ratio,
                "best_ratio": self.best_ratio, "rule": self.rule}


@dataclass(frozen=True)
class BlendResult:
    """The curves at every ratio, what they advise, and how they were measured."""

    ratios: tuple[float, ...]
    curves: tuple[Curve, ...]
    recommendations: tuple[Recommendation, ...]  # one per outcome; the target's first
    n_real: int
    n_synthetic: int
    folds: int
    repeats: int
    seed: int
    stratified_by: str

    @property
    def recommendation(self) -> Recommendation:
        return self.recommendations[0]

    def to_json(self) -> dict:
        """Plain JSON values (an undefined score is null)."""
        return {
            "ratios": list(self.ratios),
            "synthetic_records_with_all_patients": [round(r * self.n_real) for r in self.ratios],
            "real_records": self.n_real, "synthetic_records": self.n_synthetic,
            "protocol": {"folds": self.folds, "repeats": self.repeats,
                         "splits": self.folds * self.repeats, "seed": self.seed,
                         "stratified_by": self.stratified_by,
                         "test_folds": "real records only; synthetic records join the "
                                       "training fold"},
            "metrics": {c.metric: {"outcome": c.outcome, "model": c.model,
                                   "higher_is_better": c.higher_is_better,
                                   "mean": _listed(c.mean), "sd": _listed(c.sd),
                                   "se": _listed(c.se)} for c in self.curves},
            "recommendation": self.recommendation.to_json(),
            "recommendations": [rec.to_json() for rec in self.recommendations],
        }


def ratio_grid(n_real: int, n_synthetic: int) -> tuple[float, ...]:
    """`RATIO_GRID`, each ratio capped at what the cohort can supply (n_synthetic / n_real)."""
    cap = n_synthetic / n_real
    return tuple(dict.fromkeys(min(ratio, cap) for ratio in RATIO_GRID))


def make_folds(strata: np.ndarray, n_synthetic: int, folds: int, repeats: int,
               seed: int) -> list[Fold]:
    """Repeated stratified k-fold over the real records (`strata`: one label per real
    record), each split with its own seeded order of the synthetic records."""
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    placeholder = np.zeros((len(strata), 1))
    return [Fold(i // folds, train, test, np.random.default_rng([seed, i]).permutation(n_synthetic))
            for i, (train, test) in enumerate(splitter.split(placeholder, strata))]


def training_and_test(fold: Fold, real: np.ndarray, synthetic: np.ndarray,
                      ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows): the fold's real training rows plus round(ratio × their
    number) synthetic rows; the fold's real test rows alone."""
    count = round(ratio * len(fold.train))
    train = np.concatenate([real[fold.train], synthetic[fold.synthetic_order[:count]]])
    return train, real[fold.test]


def blend_curve(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
                target: str | None, survival: tuple[str, str] | None, seed: int = 0,
                folds: int = FOLDS, repeats: int = REPEATS) -> BlendResult:
    """The score of each metric at each ratio, and the recommended ratio (module docstring).
    `real` and `synthetic` are parsed records (`validate_records`)."""
    outcome = [c for c in (target, *(survival or ())) if c is not None]
    real = real.dropna(subset=outcome).reset_index(drop=True)
    synthetic = synthetic.dropna(subset=outcome).reset_index(drop=True)
    strata, stratified_by = _strata(schema, real, target, survival, folds)
    folds = min(folds, int(np.unique(strata, return_counts=True)[1].min()))
    if len(synthetic) == 0:
        raise FedsynthError("The synthetic cohort has no record with the outcome "
                            f"({', '.join(outcome)}) known: there is nothing to mix in.")
    ratios = ratio_grid(len(real), len(synthetic))
    splits = make_folds(strata, len(synthetic), folds, repeats, seed)
    tasks = ([_target_task(schema, target)] if target else []) + (
        [_Task("survival", survival)] if survival else [])
    per_task = [_curves(task, schema, real, synthetic, ratios, splits) for task in tasks]
    return BlendResult(ratios, tuple(curve for curves in per_task for curve in curves),
                       tuple(recommend(curves[0], ratios) for curves in per_task),
                       len(real), len(synthetic), folds, repeats, seed, stratified_by)


def recommend(curve: Curve, ratios: tuple[float, ...]) -> Recommendation:
    """The smallest ratio whose mean is within one standard error of the best mean."""
    best, within = within_one_se(curve)
    chosen = int(np.argmax(within))  # the first True; the best ratio itself always is
    rule = (f"the smallest ratio whose mean {curve.metric} is within one standard error (over "
            f"the repeated splits) of the best ratio's ({ratio_label(ratios[best])})")
    return Recommendation(curve.outcome, curve.metric, ratios[chosen], ratios[best], rule)


def ratio_label(ratio: float) -> str:
    """'0×', '¼×', '½×', '2×', or '6.8×' for a ratio capped by the cohort's size."""
    names = {0.25: "¼", 0.5: "½"}
    text = names.get(ratio) or (f"{ratio:g}" if float(ratio).is_integer() else f"{ratio:.1f}")
    return text + "×"


@dataclass(frozen=True)
class _Task:
    """One outcome to predict (its columns are left out of the features), and how."""

    kind: str
    columns: tuple[str, ...]
    classes: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        return " / ".join(self.columns)


def _strata(schema: Schema, real: pd.DataFrame, target: str | None,
            survival: tuple[str, str] | None, folds: int) -> tuple[np.ndarray, str]:
    """One label per real record to stratify the folds on: the discrete target's class,
    else the survival event, else the numeric target's quantile bin."""
    if target and schema.column(target).is_discrete:
        strata, what = real[target].astype(str).to_numpy(), target
    elif survival:
        strata, what = event_indicator(real[survival[1]]), survival[1]
    else:
        ranks = real[target].rank(method="first").to_numpy() - 1
        strata, what = (ranks * folds // len(real)).astype(int), f"quantile bins of {target}"
    counts = np.unique(strata, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 2:
        raise FedsynthError(
            f"The site's {len(real)} records with the outcome known are too few to "
            f"cross-validate: stratified by {what}, they form {len(counts)} group(s), the "
            f"smallest of {counts.min()} record(s); at least 2 groups of at least 2 are "
            "needed. The blending advice needs more records, or another --target.")
    return strata, what


def _target_task(schema: Schema, target: str) -> _Task:
    col = schema.column(target)
    if col.is_discrete:
        return _Task("classification", (target,), col.categories)
    return _Task("regression", (target,))


def _curves(task: _Task, schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
            ratios: tuple[float, ...], splits: list[Fold]) -> list[Curve]:
    """Each of the task's metrics at every ratio on every split."""
    encoding = build_encoding(schema)
    kept = _features(encoding, task)
    rows = {name: np.column_stack([design_matrix(encoding, frame, set(task.columns))[:, kept],
                                   _outcome_columns(task, frame)])
            for name, frame in (("real", real), ("synthetic", synthetic))}
    scores = np.array([[_scores(task, *training_and_test(fold, rows["real"], rows["synthetic"],
                                                         ratio))
                        for fold in splits] for ratio in ratios])  # ratio × split × metric
    return [Curve(metric, task.outcome, MODELS[task.kind], higher, scores[:, :, k])
            for k, (metric, higher) in enumerate(_METRICS[task.kind])]


def _features(encoding: TableEncoding, task: _Task) -> np.ndarray:
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


_METRICS = {"classification": (("AUC", True), ("Brier score", False)),
            "regression": (("MAE", False),),
            "survival": (("concordance index", True),)}


def _outcome_columns(task: _Task, frame: pd.DataFrame) -> np.ndarray:
    """The outcome as the last column(s) of a row: class index, value, or (time, event)."""
    if task.kind == "classification":
        labels = {c: i for i, c in enumerate(task.classes)}
        return frame[task.columns[0]].map(labels).to_numpy(float)
    if task.kind == "regression":
        return frame[task.columns[0]].to_numpy(float)
    time, event = task.columns
    return np.column_stack([frame[time].to_numpy(float), event_indicator(frame[event])])


def _scores(task: _Task, train: np.ndarray, test: np.ndarray) -> tuple[float, ...]:
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


def within_one_se(curve: Curve) -> tuple[int, np.ndarray]:
    """(index of the best mean, which ratios' means are within one standard error of it).
    A best ratio scored on a single split has no standard error: only it is within."""
    sign = 1.0 if curve.higher_is_better else -1.0
    best = int(np.nanargmax(sign * curve.mean))
    threshold = sign * curve.mean[best] - np.nan_to_num(curve.se[best])
    return best, sign * curve.mean >= threshold


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]
