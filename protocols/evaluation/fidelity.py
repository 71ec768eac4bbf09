"""Fidelity: how closely the cohort's columns and column pairs follow the real data.

Scores follow the conventions of SDMetrics' quality report, so that numbers
are comparable with published DP-synthesis results:
- column shape: 1 − total variation distance between category frequencies
  (missing counts as its own category), or 1 − the two-sample
  Kolmogorov–Smirnov statistic on the non-missing values of numbers and dates;
- pair trend: 1 − |ρ_real − ρ_syn| / 2 for two numeric columns (Spearman ρ), and
  1 − total variation distance between the two joint contingency tables for any
  pair with a category (numbers cut into quantile bins of the real values);
- association (for heatmaps and "strong associations kept"): Spearman ρ for two
  numbers, bias-corrected Cramér's V otherwise.

Evaluation runs where the real records are (a hospital, or a party holding a
benchmark's data), so reading bins from the real values is allowed here: these
scores are not differentially private and never leave with the cohort.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from protocols.schema import Column, Schema

PAIR_BINS = 5
FIGURE_BINS = 20
STRONG_ASSOCIATION = 0.2
MISSING = "(missing)"


def column_shapes(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame) -> list[dict]:
    """One row per modelled column: its shape score and missing rates."""
    rows = []
    for col in schema.features:
        r, s = real[col.name], synthetic[col.name]
        if col.is_discrete:
            metric, score = "1 - TV", 1.0 - _tv(_frequencies(r), _frequencies(s))
        else:
            metric, score = "1 - KS", _ks_complement(r.dropna(), s.dropna())
        rows.append({"column": col.name, "type": col.type, "metric": metric,
                     "score": float(score), "missing_real": float(r.isna().mean()),
                     "missing_synthetic": float(s.isna().mean())})
    return rows


def pair_trends(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame) -> list[dict]:
    """One row per pair of modelled columns: trend score and both associations."""
    rows = []
    for a, b in itertools.combinations(schema.features, 2):
        if not a.is_discrete and not b.is_discrete:
            rho_r, rho_s = _spearman(real, a, b), _spearman(synthetic, a, b)
            metric = "correlation similarity"
            score = 1.0 - abs(_or0(rho_r) - _or0(rho_s)) / 2.0
            assoc_r, assoc_s = rho_r, rho_s
        else:
            codes_r = [_codes(real[c.name], c, real[c.name]) for c in (a, b)]
            codes_s = [_codes(synthetic[c.name], c, real[c.name]) for c in (a, b)]
            metric = "contingency similarity"
            score = 1.0 - _tv(_joint(*codes_r), _joint(*codes_s))
            assoc_r, assoc_s = _cramers_v(*codes_r), _cramers_v(*codes_s)
        rows.append({"a": a.name, "b": b.name, "metric": metric, "score": float(score),
                     "association_real": assoc_r, "association_synthetic": assoc_s})
    return rows


def strong_associations_kept(pairs: list[dict]) -> float | None:
    """Share of the real data's strong associations (|a| ≥ 0.2) that the cohort keeps:
    same direction and within half of the real strength."""
    strong = [p for p in pairs if p["association_real"] is not None
              and abs(p["association_real"]) >= STRONG_ASSOCIATION]
    if not strong:
        return None
    kept = [p for p in strong if p["association_synthetic"] is not None
            and abs(p["association_synthetic"] - p["association_real"])
            <= 0.5 * abs(p["association_real"])]
    return len(kept) / len(strong)


def association_matrix(schema: Schema, pairs: list[dict], which: str) -> list[list[float | None]]:
    """Square matrix of associations (`which` is "real" or "synthetic"), 1 on the diagonal."""
    names = [c.name for c in schema.features]
    index = {n: i for i, n in enumerate(names)}
    matrix: list[list[float | None]] = [[1.0 if i == j else None for j in range(len(names))]
                                        for i in range(len(names))]
    for p in pairs:
        value = p[f"association_{which}"]
        matrix[index[p["a"]]][index[p["b"]]] = matrix[index[p["b"]]][index[p["a"]]] = value
    return matrix


def marginal_figures(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame) -> list[dict]:
    """Relative frequencies for side-by-side marginal plots."""
    figures = []
    for col in schema.features:
        r, s = real[col.name], synthetic[col.name]
        if col.is_discrete:
            labels = list(col.categories) + ([MISSING] if col.nullable else [])
            fr, fs = _frequencies(r), _frequencies(s)
            figures.append({"column": col.name, "kind": "discrete", "labels": labels,
                            "real": [float(fr.get(x, 0.0)) for x in labels],
                            "synthetic": [float(fs.get(x, 0.0)) for x in labels]})
            continue
        values = r.dropna().to_numpy(dtype=float)
        low, high = (values.min(), values.max()) if len(values) else (col.low, col.high)
        edges = np.linspace(low, high if high > low else low + 1.0, FIGURE_BINS + 1)
        shown = 1970.0 + edges / 365.25 if col.type == "date" else edges  # dates as years
        figures.append({"column": col.name + (" (year)" if col.type == "date" else ""),
                        "kind": "numeric", "edges": shown.tolist(),
                        "real": _histogram(r, edges), "synthetic": _histogram(s, edges)})
    return figures


def _histogram(values: pd.Series, edges: np.ndarray) -> list[float]:
    present = np.clip(values.dropna().to_numpy(dtype=float), edges[0], edges[-1])
    counts, _ = np.histogram(present, bins=edges)
    return (counts / max(1, len(present))).tolist()


def _frequencies(values: pd.Series) -> pd.Series:
    return values.fillna(MISSING).astype(str).value_counts(normalize=True)


def _tv(p: pd.Series, q: pd.Series) -> float:
    p, q = p.align(q, fill_value=0.0)
    return float(0.5 * np.abs(p - q).sum())


def _ks_complement(r: pd.Series, s: pd.Series) -> float:
    if len(r) == 0 or len(s) == 0:
        return 1.0 if len(r) == len(s) else 0.0
    return 1.0 - float(stats.ks_2samp(r.to_numpy(float), s.to_numpy(float)).statistic)


def _or0(value: float | None) -> float:
    return 0.0 if value is None else value


def _spearman(frame: pd.DataFrame, a: Column, b: Column) -> float | None:
    both = frame[[a.name, b.name]].dropna().astype(float)
    if len(both) < 3 or both[a.name].nunique() < 2 or both[b.name].nunique() < 2:
        return None
    return float(stats.spearmanr(both[a.name], both[b.name]).statistic)


def _codes(values: pd.Series, col: Column, reference: pd.Series) -> np.ndarray:
    """Discrete codes: categories as they are; numbers cut at quantiles of `reference`."""
    if col.is_discrete:
        return values.fillna(MISSING).astype(str).to_numpy()
    present = reference.dropna().to_numpy(dtype=float)
    quantiles = np.linspace(0, 1, PAIR_BINS + 1)[1:-1]
    edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.array([])
    numbers = values.to_numpy(dtype=float)
    codes = np.searchsorted(edges, numbers, side="right").astype(object)
    codes[np.isnan(numbers)] = MISSING
    return codes.astype(str)


def _joint(x: np.ndarray, y: np.ndarray) -> pd.Series:
    pairs = pd.Series([f"{a}\x1f{b}" for a, b in zip(x, y)])
    return pairs.value_counts(normalize=True)


def _cramers_v(x: np.ndarray, y: np.ndarray) -> float | None:
    """Bias-corrected Cramér's V (Bergsma 2013): near 0 for independent columns at any n."""
    table = pd.crosstab(x, y).to_numpy(dtype=float)
    n = table.sum()
    r, k = table.shape
    if n < 2 or r < 2 or k < 2:
        return None
    chi2 = stats.chi2_contingency(table, correction=False).statistic
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_c, k_c = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denom = min(k_c - 1, r_c - 1)
    return float(np.sqrt(phi2 / denom)) if denom > 0 else None
