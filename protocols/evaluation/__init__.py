"""Scoring a synthetic cohort against real records: fidelity, utility, privacy, bias.

`evaluate_cohort` is a pure function of parsed records (as returned by
`protocols.records.validate_records`) and returns the report as plain JSON
values; `protocols.evaluation.report.html` renders it. The same function runs at the
coordinator (`fedsynth-coordinator evaluate`, with records a benchmark or a
data owner holds) and at a hospital (`fedsynth-node evaluate`).

The scores are computed from real records without DP: a report with figures
stays with whoever holds those records, and no such score leaves a node. A
study's federated evaluation is a DP release of count tables instead
(`protocols.evaluation.release`, scored by `protocols.evaluation.federated`);
`study_report` lays its scores out as a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from protocols.evaluation.bias import category_balance
from protocols.evaluation.federated import FEDERATED_SCORES
from protocols.evaluation.fidelity import (association_matrix, column_shapes, marginal_figures,
                                           pair_trends, strong_associations_kept)
from protocols.evaluation.methods import METHODS
from protocols.evaluation.privacy_risk import distance_risks, exact_copies
from protocols.evaluation.survival import survival_agreement
from protocols.evaluation.utility import tstr
from protocols.schema import Schema

REPORT_VERSION = 2
HEADLINE_SCORES = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_ratio",
                   "dcr_share", "exact_copies", "exact_copy_share", "mia_auc", "km_distance",
                   "hr_direction_agreement", "bias_flags")  # keys of `headline_scores`


def evaluate_cohort(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame, *,
                    holdout: pd.DataFrame | None = None, labels: Mapping[str, str] | None = None,
                    manifest: Mapping[str, Any] | None = None, figures: bool = True,
                    seed: int = 0) -> dict[str, Any]:
    """The full report of `synthetic` against `real` (the records it was trained on)."""
    roles = schema.roles
    shapes = column_shapes(schema, real, synthetic)
    pairs = pair_trends(schema, real, synthetic)
    utility = (tstr(schema, real, synthetic, holdout, roles.target, seed)
               if roles.target else None)
    survival, km = (survival_agreement(schema, real, synthetic, *roles.survival)
                    if roles.survival else (None, None))
    copies = exact_copies(schema, real, synthetic)
    dcr = mia = None
    if holdout is not None and len(holdout) and len(real):
        dcr, mia = distance_risks(schema, real, holdout, synthetic, seed)
    bias = category_balance(schema, real, synthetic)
    privacy = {"dcr_share": dcr, "exact_copies": copies,
               "exact_copy_share": copies / max(1, len(synthetic)), "mia_auc": mia,
               "note": ("measured against held-out real records" if dcr is not None else
                        "DCR share and membership inference need real records held out of "
                        "training (--holdout); only exact copies were checked")}
    labels = labels or {}
    report = {
        "report_version": REPORT_VERSION,
        "title": f"Synthetic cohort evaluation: {schema.name or 'unnamed schema'}",
        "schema": {"name": schema.name, "sha256": schema.sha256},
        "inputs": {"real": labels.get("real"), "synthetic": labels.get("synthetic", "cohort"),
                   "holdout": labels.get("holdout"), "real_rows": len(real),
                   "synthetic_rows": len(synthetic),
                   "holdout_rows": None if holdout is None else len(holdout)},
        "privacy_statement": privacy_statement(manifest),
        "fidelity": {"columns": shapes, "pairs": pairs},
        "utility": utility, "survival": survival, "privacy": privacy, "bias": bias,
        "methods": dict(METHODS), "federated": None,
        "figures": None if not figures else {
            "marginals": marginal_figures(schema, real, synthetic),
            "association": {"columns": [c.name for c in schema.features],
                            "real": association_matrix(schema, pairs, "real"),
                            "synthetic": association_matrix(schema, pairs, "synthetic")},
            "km": km},
    }
    report["scores"] = headline_scores(report)
    return _json_safe(report)


def headline_scores(report: Mapping[str, Any]) -> dict[str, Any]:
    shapes = [c["score"] for c in report["fidelity"]["columns"]]
    pairs = report["fidelity"]["pairs"]
    utility, survival, privacy = report["utility"], report["survival"], report["privacy"]
    return {
        "column_shapes": float(np.mean(shapes)) if shapes else None,
        "pairwise": float(np.mean([p["score"] for p in pairs])) if pairs else None,
        "strong_associations_kept": strong_associations_kept(pairs),
        "tstr_ratio": utility["ratio"] if utility else None,
        "dcr_share": privacy["dcr_share"], "exact_copies": privacy["exact_copies"],
        "exact_copy_share": privacy["exact_copy_share"], "mia_auc": privacy["mia_auc"],
        "km_distance": survival["km_distance"] if survival else None,
        "hr_direction_agreement": survival["hr_direction_agreement"] if survival else None,
        "bias_flags": sum(1 for b in report["bias"] if b["flag"]),
    }


def study_report(schema: Schema, manifest: Mapping[str, Any] | None,
                 federated: Mapping[str, Any], synthetic_rows: int) -> dict[str, Any]:
    """The coordinator's report of a study: it holds no real record, so its scores are
    those of the sites' pooled noisy evaluation tables, and it has no figures."""
    scores = {key: federated["aggregate"][key]["pooled"] for key in FEDERATED_SCORES}
    return _json_safe({
        "report_version": REPORT_VERSION,
        "title": f"Synthetic cohort, federated evaluation: {schema.name or 'unnamed schema'}",
        "schema": {"name": schema.name, "sha256": schema.sha256},
        "inputs": {"real": f"records of {len(federated['sites'])} hospitals, released as "
                           "noisy count tables", "synthetic": "synthetic.csv", "holdout": None,
                   "real_rows": None, "synthetic_rows": synthetic_rows, "holdout_rows": None},
        "privacy_statement": privacy_statement(manifest), "scores": scores,
        "fidelity": None, "utility": None, "survival": None, "privacy": None, "bias": None,
        "methods": dict(METHODS), "figures": None, "federated": dict(federated),
    })


def privacy_statement(manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ε/δ statement of a cohort's manifest, as the report shows it."""
    if not manifest or "privacy" not in manifest:
        return None
    privacy = manifest["privacy"]
    return {"private": bool(privacy.get("private")),
            "epsilon_target_per_site": privacy.get("epsilon_target_per_site"),
            "delta_per_site": privacy.get("delta_per_site"),
            "guarantee": privacy.get("statement") or privacy.get("guarantee", ""),
            "cohort_model": privacy.get("cohort_model"),
            "contributors": list(manifest.get("contributors", [])),
            "sites": dict(privacy.get("sites", {}))}


def _json_safe(value: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, so the report is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
