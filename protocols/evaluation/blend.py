"""How many synthetic records should a site mix into its own training set?

With scarce real data, adding synthetic records can help a model; past some
share it learns the generator's quirks and error climbs again (a U-shaped
curve). `blend_curve` measures that curve on the site's own patients:
- ratios of synthetic to real training records from `RATIO_GRID`, capped by the
  cohort's size (`ratio_grid`);
- repeated stratified k-fold over the REAL records only: every test fold holds
  real records only, and a split's synthetic records join its training fold,
  never its test fold (`make_folds`, `training_and_test`);
- the schema's target and survival pair, each scored by its models
  (`blend_models`: AUC and Brier score, MAE, or the concordance index).
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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import RepeatedStratifiedKFold

from protocols.encoding import build_encoding
from protocols.errors import FedsynthError
from protocols.evaluation.blend_models import (METRICS, MODELS, Task, features,
                                               outcome_columns, scores, target_task)
from protocols.evaluation.survival import event_indicator
from protocols.evaluation.utility import design_matrix
from protocols.schema import Schema

RATIO_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
FOLDS = 5
REPEATS = 5


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
    tasks = ([target_task(schema, target)] if target else []) + (
        [Task("survival", survival)] if survival else [])
    per_task = [_curves(task, schema, real, synthetic, ratios, splits) for task in tasks]
    return BlendResult(ratios, tuple(curve for curves in per_task for curve in curves),
                       tuple(recommend(curves[0], ratios) for curves in per_task),
                       len(real), len(synthetic), folds, repeats, seed, stratified_by)


def recommend(curve: Curve, ratios: tuple[float, ...]) -> Recommendation:
    """The smallest ratio whose mean is within one standard error of the best mean; a
    `FedsynthError` when no split could be scored at all."""
    if not np.isfinite(curve.scores).any():
        raise FedsynthError(
            f"No split could score the {curve.metric} for {curve.outcome}: every model fit "
            "failed or every test fold lacked a comparable pair. The blending advice "
            "needs more records with the outcome known, or another --target.")
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
        smallest = f", the smallest of {counts.min()} record(s)" if len(counts) else ""
        raise FedsynthError(
            f"The site's {len(real)} records with the outcome known are too few to "
            f"cross-validate: stratified by {what}, they form {len(counts)} group(s)"
            f"{smallest}; at least 2 groups of at least 2 are needed. The blending advice "
            "needs more records, or another --target.")
    return strata, what


def _curves(task: Task, schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
            ratios: tuple[float, ...], splits: list[Fold]) -> list[Curve]:
    """Each of the task's metrics at every ratio on every split."""
    encoding = build_encoding(schema)
    kept = features(encoding, task)
    rows = {name: np.column_stack([design_matrix(encoding, frame, set(task.columns))[:, kept],
                                   outcome_columns(task, frame)])
            for name, frame in (("real", real), ("synthetic", synthetic))}
    table = np.array([[scores(task, *training_and_test(fold, rows["real"], rows["synthetic"],
                                                         ratio))
                        for fold in splits] for ratio in ratios])  # ratio × split × metric
    return [Curve(metric, task.outcome, MODELS[task.kind], higher, table[:, :, k])
            for k, (metric, higher) in enumerate(METRICS[task.kind])]


def within_one_se(curve: Curve) -> tuple[int, np.ndarray]:
    """(index of the best mean, which ratios' means are within one standard error of it).
    A best ratio scored on a single split has no standard error: only it is within."""
    sign = 1.0 if curve.higher_is_better else -1.0
    best = int(np.nanargmax(sign * curve.mean))
    threshold = sign * curve.mean[best] - np.nan_to_num(curve.se[best])
    return best, sign * curve.mean >= threshold


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]
