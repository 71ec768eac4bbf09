"""Federated scores of a released cohort, computed from the sites' noisy evaluation tables.

Every input here is either public (the schema, the plan, the released cohort)
or a DP release (each site's tables, `protocols.evaluation.release`), so every
score is post-processing: it costs no privacy beyond what the sites' ledgers
charged, and no score is a function of one site's exact records.

Scores follow the conventions of the local report (`protocols.evaluation`),
on the release's bins:
- column shapes: 1 − total variation between the real (pooled, noisy, clipped at
  0) and the cohort's column tables;
- pairwise: 1 − total variation between the joint pair tables;
- strong associations kept: Cramér's V of each pair table, real against cohort
  (the local report's rule: |V_real| ≥ 0.2 kept when within half of it);
- TSTR: AUC of the cohort-trained model on the sites' records, from the score
  decile tables (ties within a decile count one half), macro-averaged over the
  scored classes; for a numeric target, MAE from the error bins' midpoints;
- Kaplan–Meier distance: the largest gap between the curves built from the time
  bin × event tables;
- bias flags: declared categories whose cohort share fell below half of a real
  share that stands out of the noise (above two noise standard deviations).

The noise is large for small sites, so every score comes with a reference:
what a perfect cohort (the released cohort scored against itself) scores once
noise of the same scale is added to its tables (`perfect_cohort`). A score far
below its reference says the cohort differs; one near it, that the noise
cannot tell.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from protocols.count_tables import one_name, pair_name
from protocols.evaluation.bias import SHRUNK_BELOW
from protocols.evaluation.fidelity import strong_associations_kept
from protocols.evaluation.release import (ERROR_BINS, EvaluationLayout, cell_sigmas,
                                          survival_name, utility_name)
from protocols.plan import StudyPlan

FEDERATED_SCORES = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_auc",
                    "tstr_mae", "km_distance", "bias_flags")
REFERENCE_DRAWS = 20
Tables = Mapping[str, np.ndarray]


def pooled(site_tables: Mapping[str, Tables]) -> dict[str, np.ndarray]:
    """The sites' tables summed cell by cell (the sum carries every site's noise)."""
    names = next(iter(site_tables.values())).keys() if site_tables else []
    return {name: sum(np.asarray(t[name], dtype=float) for t in site_tables.values())
            for name in names}


def federated_scores(layout: EvaluationLayout, real: Tables, synthetic: Tables,
                     noise_sd: Mapping[str, float]) -> dict[str, float | None]:
    """Every federated score of the cohort, given as its own tables (`synthetic`:
    `layout.description_counts` of it), against `real` (noisy tables; `noise_sd`, the
    standard deviation of their noise per cell, decides which category shares stand
    out of it for the bias flags)."""
    clipped = {name: np.clip(np.asarray(t, dtype=float), 0.0, None) for name, t in real.items()}
    features = layout.schema.features
    columns = [_tv_complement(clipped[one_name(c)], synthetic[one_name(c)]) for c in features]
    pairs = [_pair(clipped, synthetic, a, b, noise_sd)
             for a, b in itertools.combinations(features, 2)]
    return {
        "column_shapes": _mean(columns),
        "pairwise": _mean([p["score"] for p in pairs]),
        "strong_associations_kept": strong_associations_kept(pairs),
        "tstr_auc": _tstr_auc(layout, clipped),
        "tstr_mae": _tstr_mae(layout, clipped),
        "km_distance": _km_distance(layout, clipped, synthetic),
        "bias_flags": _bias_flags(layout, real, synthetic, noise_sd),
    }


def perfect_cohort_scores(layout: EvaluationLayout, own: Tables,
                          noise_sd: Mapping[str, float], seed: int = 0
                          ) -> dict[str, float | None]:
    """The mean score of the cohort against its own tables (`own`) with noise of
    `noise_sd` added (post-processing of public data: an ordinary seeded generator is
    fine here). The utility scores have no such reference and stay None."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(REFERENCE_DRAWS):
        noisy = {name: t + rng.normal(0.0, noise_sd.get(name, 0.0), t.shape)
                 for name, t in own.items()}
        draws.append(federated_scores(layout, noisy, own, noise_sd))
    return {key: (None if key in ("tstr_auc", "tstr_mae") else
                  _mean([d[key] for d in draws if d[key] is not None]))
            for key in FEDERATED_SCORES}


def pooled_noise_sd(layout: EvaluationLayout, plan: StudyPlan, n_sites: int
                    ) -> dict[str, float]:
    """Per table, the standard deviation of the noise in a sum over `n_sites` sites."""
    return {name: sigma * math.sqrt(n_sites) for name, sigma in cell_sigmas(layout, plan).items()}


def _pair(real: Tables, synthetic: Tables, a, b, noise_sd: Mapping[str, float]) -> dict:
    name = pair_name(a, b)
    return {"a": a.name, "b": b.name, "score": _tv_complement(real[name], synthetic[name]),
            "association_real": _cramers_v(real[name], noise_sd.get(name, 0.0)),
            "association_synthetic": _cramers_v(synthetic[name])}


def _tv_complement(real: np.ndarray, synthetic: np.ndarray) -> float | None:
    r, s = real.sum(), synthetic.sum()
    if r <= 0 or s <= 0:
        return None
    return float(1.0 - 0.5 * np.abs(real / r - synthetic / s).sum())


def _cramers_v(table: np.ndarray, noise_sd: float = 0.0) -> float | None:
    """Cramér's V of a contingency table (rows and columns with no count left out).
    Noise of standard deviation `noise_sd` per cell adds about Σ sd²/expected to χ²,
    which would read as association; that much is taken off (never below 0)."""
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    total = table.sum()
    if total <= 0 or min(table.shape) < 2:
        return None
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    chi2 = float(((table - expected) ** 2 / expected).sum())
    chi2 -= float((noise_sd ** 2 / expected).sum())
    return float(math.sqrt(max(0.0, chi2) / (total * (min(table.shape) - 1))))


def _tstr_auc(layout: EvaluationLayout, real: Tables) -> float | None:
    target = layout.target
    if target is None or not target.is_discrete:
        return None
    aucs = [_binned_auc(real[name]) for name in real if name.startswith(f"T|{target.name}|")]
    return _mean([a for a in aucs if a is not None])


def _binned_auc(table: np.ndarray) -> float | None:
    """P(score of a record of the class > score of another), ties counting one half,
    from counts by score bin (rows) of the class (column 0) and the others (column 1)."""
    positive, negative = table[:, 0], table[:, 1]
    p, n = positive.sum(), negative.sum()
    if p <= 0 or n <= 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(negative)[:-1]])
    return float((positive * (below + 0.5 * negative)).sum() / (p * n))


def _tstr_mae(layout: EvaluationLayout, real: Tables) -> float | None:
    target = layout.target
    if target is None or target.is_discrete or utility_name(target) not in real:
        return None
    counts = real[utility_name(target)][:ERROR_BINS]
    if counts.sum() <= 0:
        return None
    midpoints = (np.arange(ERROR_BINS) + 0.5) / ERROR_BINS * float(target.high - target.low)
    return float((counts * midpoints).sum() / counts.sum())


def _km_distance(layout: EvaluationLayout, real: Tables, synthetic: Tables) -> float | None:
    if layout.survival is None:
        return None
    name = survival_name(*layout.survival)
    curves = [_kaplan_meier(real[name]), _kaplan_meier(synthetic[name])]
    if any(c is None for c in curves):
        return None
    return float(np.max(np.abs(curves[0] - curves[1])))


def _kaplan_meier(table: np.ndarray) -> np.ndarray | None:
    """Survival after each time bin from counts of censored (column 0) and events
    (column 1) per bin; events in a bin are taken before its censorings."""
    censored, events = table[:, 0], table[:, 1]
    at_risk = np.cumsum((censored + events)[::-1])[::-1]
    if at_risk[0] <= 0:
        return None
    hazard = np.divide(events, at_risk, out=np.zeros_like(events), where=at_risk > 0)
    return np.cumprod(1.0 - np.clip(hazard, 0.0, 1.0))


def _bias_flags(layout: EvaluationLayout, real: Tables, synthetic: Tables,
                noise_sd: Mapping[str, float]) -> int:
    flags = 0
    for col in layout.schema.features:
        if not col.is_discrete:
            continue
        name = one_name(col)
        r = np.clip(np.asarray(real[name], dtype=float), 0.0, None)
        s = synthetic[name]
        if r.sum() <= 0 or s.sum() <= 0:
            continue
        visible = r > 2.0 * noise_sd.get(name, 0.0)
        shares_r, shares_s = r / r.sum(), s / s.sum()
        flags += int(np.sum(visible[:len(col.categories)]
                            & (shares_s < SHRUNK_BELOW * shares_r)[:len(col.categories)]))
    return flags


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def federated_summary(layout: EvaluationLayout, plan: StudyPlan,
                      site_tables: Mapping[str, Tables], cohort: pd.DataFrame) -> dict:
    """The report's federated section: the scores of the pooled tables with what a perfect
    cohort would score under the same noise, and each site's own (noisier) scores."""
    n_sites = len(site_tables)
    pooled_sd = pooled_noise_sd(layout, plan, n_sites)
    site_sd = pooled_noise_sd(layout, plan, 1)
    synthetic = layout.description_counts(cohort)  # the cohort's tables, counted once
    total = federated_scores(layout, pooled(site_tables), synthetic, pooled_sd)
    reference = perfect_cohort_scores(layout, synthetic, pooled_sd, seed=plan.seed)
    sites = {name: federated_scores(layout, tables, synthetic, site_sd)
             for name, tables in sorted(site_tables.items())}
    aggregate = {key: {"pooled": total[key], "perfect_cohort": reference[key]}
                 for key in FEDERATED_SCORES}
    noise = sorted({round(sd, 2) for sd in pooled_sd.values()})
    return {
        "sites": sites, "aggregate": aggregate,
        "evaluation_epsilon": plan.evaluation_epsilon,
        "note": (f"Each of the {n_sites} hospitals released, once and charged to its privacy "
                 f"ledger (epsilon {plan.evaluation_epsilon:g} for this release alone), count "
                 "tables of its records with discrete Gaussian noise; every score is computed "
                 "from those tables summed over hospitals (noise standard deviation per cell "
                 f"of the sum: {', '.join(f'{v:g}' for v in noise)}). 'A perfect cohort' is "
                 "what the released cohort scores against its own tables under the same "
                 "noise: a score near it means the noise cannot tell the cohort from the "
                 "real records. Exact copies, distances to records and membership inference "
                 "cannot be released with differential privacy: each hospital can compute "
                 "them locally with `fedsynth-node evaluate`."),
    }
