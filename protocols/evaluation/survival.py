"""Survival agreement for a schema with a (time, event) pair: the synthetic-control-arm check.

- Kaplan–Meier distance: both curves (lifelines' `KaplanMeierFitter`) are read on
  a common grid of evenly spaced times from 0 to the shorter follow-up; we report
  the largest gap (a KS-type sup distance) and the mean gap over the grid. A
  record whose time or event is missing is left out (of the Cox fits too); with
  no record left on one side, the curves are not compared.
- Cox hazard ratios: `CoxPHFitter` (penalizer 0.01, so a cohort with a rare
  level still converges) on the same covariates for real and synthetic records:
  every other modelled column in the schema's encoding (numbers scaled by their
  declared bounds, so a hazard ratio is per full declared range; one-hot levels
  against the first declared category). A covariate that does not vary in one
  data set is left out of that data set's model (it has no hazard ratio there,
  and a cohort that dropped a rare level is still compared on the others).
  Direction agreement is the share of the
  real model's significant covariates (p < 0.05; all covariates if none is) whose
  synthetic log hazard ratio has the same sign.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError

from protocols.encoding import build_encoding
from protocols.schema import Schema

GRID_POINTS = 200


def event_indicator(values: pd.Series) -> np.ndarray:
    """1 for an event, 0 for censoring, NaN where unknown, from a boolean label or a 0/1
    integer (a missing event is not a censoring: the record is left out)."""
    if values.dtype == object:
        events = values.astype(str).str.lower().eq("true").to_numpy(float)
        return np.where(values.isna().to_numpy(), np.nan, events)
    return values.to_numpy(float)


def survival_agreement(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
                       time: str, event: str) -> tuple[dict, dict | None]:
    """(scores, figure data) for the survival pair; the Kaplan–Meier scores and the
    figure are None when one side has no record with both time and event known."""
    curves = {name: _kaplan_meier(frame, time, event)
              for name, frame in (("real", real), ("synthetic", synthetic))}
    ratios = _hazard_ratios(schema, real, synthetic, time, event)
    scores = {"time": time, "event": event, "km_distance": None, "km_mean_distance": None,
              "hazard_ratios": ratios, "hr_direction_agreement": _direction_agreement(ratios)}
    if curves["real"] is None or curves["synthetic"] is None:
        return scores, None
    horizon = min(curves["real"].timeline.max(), curves["synthetic"].timeline.max())
    grid = np.linspace(0.0, horizon, GRID_POINTS)
    gaps = np.abs(_survival_at(curves["real"], grid) - _survival_at(curves["synthetic"], grid))
    scores.update(km_distance=float(gaps.max()), km_mean_distance=float(gaps.mean()))
    figure = {name: {"time": fitter.timeline.tolist(),
                     "survival": fitter.survival_function_.iloc[:, 0].tolist()}
              for name, fitter in curves.items()}
    return scores, figure


def _kaplan_meier(frame: pd.DataFrame, time: str, event: str) -> KaplanMeierFitter | None:
    known = frame[[time, event]].dropna()
    if known.empty:
        return None
    fitter = KaplanMeierFitter()
    fitter.fit(known[time].to_numpy(float), event_observed=event_indicator(known[event]))
    return fitter


def _survival_at(fitter: KaplanMeierFitter, grid: np.ndarray) -> np.ndarray:
    return fitter.survival_function_at_times(grid).to_numpy(float)


def _covariates(schema: Schema, frame: pd.DataFrame, time: str, event: str) -> pd.DataFrame:
    encoding = build_encoding(schema)
    encoded = encoding.encode(frame)
    out: dict[str, np.ndarray] = {}
    for block in encoding.blocks:
        if block.column in (time, event):
            continue
        if block.kind == "onehot":
            col = schema.column(block.column)
            labels = list(col.categories) + (["(missing)"] if col.nullable else [])
            for offset in range(1, block.width):  # the first declared level is the reference
                out[f"{block.column}={labels[offset]}"] = encoded[:, block.start + offset]
        else:
            suffix = " missing" if block.kind == "missing" else ""
            out[block.column + suffix] = encoded[:, block.start]
    covariates = pd.DataFrame(out, index=frame.index).astype(float)
    covariates["__time"] = frame[time].to_numpy(float)
    covariates["__event"] = event_indicator(frame[event])
    return covariates.dropna()


def _hazard_ratios(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame,
                   time: str, event: str) -> list[dict]:
    real_cov = _covariates(schema, real, time, event)
    usable = [c for c in real_cov.columns if c.startswith("__") or real_cov[c].nunique() > 1]
    fits = {name: _fit_cox(frame[usable]) for name, frame in
            (("real", real_cov), ("synthetic", _covariates(schema, synthetic, time, event)))}
    rows = []
    for covariate in usable:
        if covariate.startswith("__"):
            continue
        log_r, real_p = _coefficient(fits["real"], covariate)
        log_s, _ = _coefficient(fits["synthetic"], covariate)
        rows.append({"covariate": covariate,
                     "real": None if log_r is None else float(np.exp(log_r)),
                     "synthetic": None if log_s is None else float(np.exp(log_s)),
                     "real_p": real_p,
                     "same_direction": None if None in (log_r, log_s)
                     else bool(np.sign(log_r) == np.sign(log_s))})
    return rows


def _coefficient(fit: CoxPHFitter | None, covariate: str) -> tuple[float | None, float | None]:
    """(log hazard ratio, p) of `covariate`, or Nones where the fit left it out."""
    if fit is None or covariate not in fit.params_.index:
        return None, None
    return float(fit.params_[covariate]), float(fit.summary.loc[covariate, "p"])


def _fit_cox(frame: pd.DataFrame) -> CoxPHFitter | None:
    """A penalised Cox fit on the covariates that vary in `frame` (a constant one makes
    the fit singular), or None where it cannot be fitted (too few events)."""
    if frame["__event"].sum() < 2:
        return None
    frame = frame[[c for c in frame.columns if c.startswith("__") or frame[c].nunique() > 1]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CoxPHFitter(penalizer=0.01).fit(frame, duration_col="__time",
                                                  event_col="__event")
    except (ConvergenceError, ValueError, np.linalg.LinAlgError):
        return None


def _direction_agreement(rows: list[dict]) -> float | None:
    compared = [r for r in rows if r["same_direction"] is not None]
    significant = [r for r in compared if r["real_p"] is not None and r["real_p"] < 0.05]
    pool = significant or compared
    return sum(r["same_direction"] for r in pool) / len(pool) if pool else None
