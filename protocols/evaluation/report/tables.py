"""The tables of an evaluation report: escaped cells, number formats, tabular sections.

`protocols.evaluation.report.html` assembles the page; this module builds its tables.
Column names and category labels come from users' files, so every cell is
HTML-escaped unless this module built it itself as `Html`. A missing score is
shown as "—", with the reason it can be missing where there is one.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MISSING = "—"

# score name: (label, ideal value, why it can be missing, plain-language meaning)
SCORE_ROWS: dict[str, tuple[str, str, str, str]] = {
    "column_shapes": ("Column shapes", "1", "no columns compared",
                      "How closely each column's distribution matches the real one."),
    "pairwise": ("Pairwise structure", "1", "no column pairs compared",
                 "How well the relationships between pairs of columns are kept."),
    "strong_associations_kept": ("Strong associations kept", "1", "no strong real association",
                                 "Share of the strong real associations the cohort keeps."),
    "tstr_ratio": ("Utility ratio (TSTR / TRTR)", "1 (≥ 0.85 good)",
                   "no prediction target, or too few labelled real records to score one",
                   "A model trained on synthetic records, tested on real patients, relative "
                   "to one trained on real records."),
    "tstr_auc": ("Utility: TSTR AUC", "as high as a model on real records",
                 "no categorical prediction target",
                 "AUC on the hospitals' records of a model trained on the cohort."),
    "tstr_mae": ("Utility: TSTR MAE", "as low as a model on real records",
                 "no numeric prediction target",
                 "Mean absolute error on the hospitals' records of a model trained on the "
                 "cohort."),
    "dcr_share": ("DCR share", "0.5 (≤ 0.6 good)", "needs held-out real records",
                  "Share of synthetic rows closer to a training record than to a held-out "
                  "one; well above 0.5 hints at memorised patients."),
    "exact_copies": ("Exact copies", "0", "not checked",
                     "Synthetic rows identical to a real record."),
    "exact_copy_share": ("Exact copy share", "0", "not checked",
                         "Exact copies as a share of synthetic rows."),
    "mia_auc": ("Membership inference AUC", "0.5", "needs held-out real records",
                "How well an attacker tells whether a patient's record was used for "
                "training; 0.5 is a coin flip."),
    "km_distance": ("Kaplan–Meier distance", "0",
                    "no survival outcome, or no record with its time and event known",
                    "Largest gap between the real and synthetic survival curves."),
    "hr_direction_agreement": ("Hazard-ratio direction agreement", "1",
                               "no survival outcome, or too few events to fit a Cox model",
                               "Share of significant real hazard ratios (all of them if none "
                               "is significant) that the cohort points the same way."),
    "bias_flags": ("Bias flags", "0", "no categories compared",
                   "Categories erased, or shrunk below half of their real share."),
}


class Html(str):
    """Markup built by the report modules: `table` inserts it as is instead of escaping it."""


def scores_section(report: Mapping[str, Any]) -> str:
    """The headline scores, each with its ideal value and, when missing, why."""
    scores = report.get("scores")
    if not scores:
        return ""
    rows = []
    for name in sorted(scores, key=score_order):
        label, ideal, reason, meaning = SCORE_ROWS.get(name, (name, MISSING, "", ""))
        rows.append((label, value_text(scores[name], reason), ideal, meaning))
    return "<h2>Headline scores</h2>\n" + table(("Score", "Value", "Ideal", "What it means"),
                                                  rows)


def utility_section(report: Mapping[str, Any]) -> str:
    utility = report.get("utility")
    if not utility:
        return ""
    facts = table(("", ""), [
        ("Target", utility.get("target")), ("Task", utility.get("task")),
        ("Metric", utility.get("metric")), ("Model", utility.get("model")),
        ("Trained on real, tested on real (TRTR)", value_text(utility.get("trtr"))),
        ("Trained on synthetic, tested on real (TSTR)", value_text(utility.get("tstr"))),
        ("Ratio (1 is parity, ≥ 0.85 good)", value_text(utility.get("ratio"),
                                                         SCORE_ROWS["tstr_ratio"][2]))])
    return ("<h2>Utility: train on synthetic, test on real</h2>\n" + facts
            + f"\n<p>{esc(utility.get('protocol') or '')}</p>")


def privacy_section(report: Mapping[str, Any]) -> str:
    privacy = report.get("privacy")
    if not privacy:
        return ""
    facts = table(("", ""), [
        ("DCR share (0.5 ideal, ≤ 0.6 good)", value_text(privacy.get("dcr_share"),
                                                      SCORE_ROWS["dcr_share"][2])),
        ("Exact copies (0 ideal)", value_text(privacy.get("exact_copies"))),
        ("Exact copy share", value_text(privacy.get("exact_copy_share"))),
        ("Membership inference AUC (0.5 ideal)", value_text(privacy.get("mia_auc"),
                                                         SCORE_ROWS["mia_auc"][2]))])
    return (f"<h2>Privacy risk checks</h2>\n{facts}\n"
            f"<p>{esc(privacy.get('note') or '')}</p>")


def bias_section(report: Mapping[str, Any]) -> str:
    bias = report.get("bias")
    if bias is None:
        return ""
    flagged = sum(1 for row in bias if row.get("flag"))
    rows = [(b["column"], b["category"], share_text(b["real"]), share_text(b["synthetic"]),
             value_text(b["ratio"]), Html(f"<strong>⚠ {esc(b['flag'])}</strong>")
             if b.get("flag") else "") for b in bias]
    classes = ["flagged" if b.get("flag") else "" for b in bias]
    return ("<h2>Representation of categories</h2>\n"
            f"<p>{flagged} of {len(bias)} categories flagged: <em>erased</em> means the "
            "synthetic cohort has none of it, <em>shrunk</em> that its share fell below half "
            "of the real share.</p>\n"
            + table(("Column", "Category", "Real", "Synthetic", "Ratio (synthetic / real)",
                      "Flag"), rows, classes))


def federated_section(report: Mapping[str, Any]) -> str:
    federated = report.get("federated")
    if not federated:
        return ""
    sites = federated.get("sites") or {}
    aggregate = federated.get("aggregate") or {}
    names = {*aggregate, *(name for scores in sites.values() for name in scores)}
    rows = [(SCORE_ROWS.get(name, (name,))[0],
             *(value_text((aggregate.get(name) or {}).get(k))
               for k in ("pooled", "perfect_cohort")),
             *(value_text(sites[site].get(name)) for site in sites))
            for name in sorted(names, key=score_order)]
    return ("<h2>Federated evaluation (differentially private)</h2>\n"
            + table(("Score", "All hospitals", "A perfect cohort, same noise", *sites), rows)
            + f"\n<p>{esc(federated.get('note') or '')}</p>")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
           row_classes: Sequence[str] | None = None) -> str:
    """A table whose cells are escaped unless built here as `Html`. With all headers
    empty it is a list of facts: each row's first cell is that row's header."""
    head = "" if not any(headers) else (
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>")
    lines = []
    for index, row in enumerate(rows):
        cls = row_classes[index] if row_classes else ""
        cells = [_cell(value, "th" if not head and i == 0 else "td")
                 for i, value in enumerate(row)]
        lines.append(f'<tr class="{cls}">' if cls else "<tr>")
        lines.append("".join(cells) + "</tr>")
    return f'<div class="scroll"><table>{head}<tbody>{"".join(lines)}</tbody></table></div>'


def _cell(value: Any, tag: str) -> str:
    text = value if isinstance(value, Html) else esc(MISSING if value is None else value)
    return f'<{tag} scope="row">{text}</{tag}>' if tag == "th" else f"<td>{text}</td>"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def score_order(name: str) -> tuple[int, str]:
    order = list(SCORE_ROWS)
    return (order.index(name), "") if name in SCORE_ROWS else (len(order), name)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def value_text(value: Any, reason: str = "") -> Html:
    """A score with 3 decimals, a count as an integer, a missing one as "—" and why."""
    if _absent(value):
        why = f' <span class="why">({esc(reason)})</span>' if reason else ""
        return Html(MISSING + why)
    if isinstance(value, bool):
        return Html("yes" if value else "no")
    if isinstance(value, int):
        return Html(f"{value:,}")
    return Html(f"{value:.3f}")


def general_text(value: float | None) -> str:
    """ε and δ as written in a privacy statement (δ = 1e-05, not 0.000)."""
    return MISSING if _absent(value) else f"{value:.4g}"


def share_text(value: float | None) -> str:
    if _absent(value):
        return MISSING
    return "< 0.1%" if 0 < value < 0.001 else f"{value:.1%}"


def p_text(value: float | None) -> str:
    if _absent(value):
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
