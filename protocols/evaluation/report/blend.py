"""The blending advisor's words and page: what the curve advises, and how it looks.

`blend_report` is a blend run's JSON with the plain sentence a clinician can act
on (`clinician_sentence`); `blend_fragment` turns that JSON into an HTML
fragment (the curves, the plain sentence, the table of scores and how they were
obtained) that another page can embed; `render_blend_page` wraps it into one
self-contained page. The figure is an inline PNG data URI drawn with the
report's own colours (`protocols.evaluation.report.figures`), the style sheet is inline,
and a Content-Security-Policy forbids loading anything else, so the page opens
offline on a hospital workstation. Column names come from users' files, so every
string taken from the JSON is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from protocols.evaluation.blend import (BlendResult, Curve, Recommendation, ratio_label,
                                        within_one_se)
from protocols.evaluation.report.figures import REAL_COLOUR, SYNTHETIC_COLOUR, png_data_uri
from protocols.evaluation.report.tables import esc

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:15px/1.45 system-ui,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2328;max-width:1100px;
margin:0 auto;padding:1em 1.5em 3em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}
.advice{border-left:4px solid #1a7f37;background:#dafbe1;padding:.5em .8em;font-weight:600}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left}th{background:#f6f8fa}
tr.chosen td{background:#dafbe1}img{max-width:100%}dt{font-weight:600;margin-top:.6em}
"""
_INPUT_LABELS = (("records", "Your records"), ("cohort", "Synthetic cohort"),
                 ("study", "Study"), ("signature", "Cohort signature"), ("schema", "Schema"))


def blend_report(result: BlendResult) -> dict[str, Any]:
    """The blend run as plain JSON values, with its advice in words."""
    return {**result.to_json(), "sentence": clinician_sentence(result)}


def clinician_sentence(result: BlendResult) -> str:
    """What the curves say, one plain sentence per outcome, that a clinician can act on."""
    curves = {curve.metric: curve for curve in result.curves}
    return " ".join(_advice(curves[rec.metric], rec, list(result.ratios), result.n_real)
                    for rec in result.recommendations)


def _advice(curve: Curve, rec: Recommendation, ratios: list[float], n_real: int) -> str:
    at = {r: _mean_and_error(m, s) for r, m, s in zip(ratios, curve.mean, curve.se)}
    scored = f"the {curve.metric} for {curve.outcome}"
    if rec.ratio == 0:
        best = ("it was best with none" if rec.best_ratio == 0 else
                f"the best mix, {ratio_label(rec.best_ratio)}, reached {at[rec.best_ratio]}, "
                "within the noise of the estimate")
        return (f"Mixing synthetic records did not improve {scored} on your own {n_real} "
                f"patients ({at[0.0]} with your records alone; {best}): train that model on "
                "your own records alone.")
    return (f"Mixing {ratio_label(rec.ratio)} synthetic records (about "
            f"{round(rec.ratio * n_real)} added to your {n_real} patients) improved {scored} "
            f"from {at[0.0]} to {at[rec.ratio]} on your own patients; "
            f"{_beyond(curve, ratios, at)}.")


def _beyond(curve: Curve, ratios: list[float], at: dict[float, str]) -> str:
    """Where the curve turns down past its best ratio (outside one standard error), if it does."""
    best, within = within_one_se(curve)
    worse = [i for i in range(best + 1, len(ratios)) if not within[i]]
    if not worse:
        return f"more synthetic records, up to {ratio_label(ratios[-1])}, did not make it worse"
    i = worse[0]
    moved = "fell" if curve.higher_is_better else "rose"
    return (f"beyond {ratio_label(ratios[i - 1])} it {moved} ({at[ratios[i]]} at "
            f"{ratio_label(ratios[i])})")


def _mean_and_error(mean: float, error: float) -> str:
    """'0.71 ± 0.04', '10.3 ± 0.5': two decimals below 10, one below 100, none above."""
    decimals = 2 if abs(mean) < 10 else 1 if abs(mean) < 100 else 0
    return f"{mean:.{decimals}f} ± {error:.{decimals}f}"


def render_blend_page(report: Mapping[str, Any]) -> str:
    """The blend report as one HTML page with nothing to load from elsewhere."""
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>How much synthetic data to mix in</title>\n<style>{_CSS}</style>\n"
            f"</head>\n<body>\n<h1>How much synthetic data to mix in</h1>\n"
            f"{_inputs(report)}\n{blend_fragment(report)}\n</body>\n</html>\n")


def blend_fragment(report: Mapping[str, Any]) -> str:
    """The curves, the advice, the scores and the method, as embeddable HTML."""
    return "\n".join([
        f'<p class="advice">{esc(report["sentence"])}</p>',
        f'<figure><img src="{blend_figure(report)}" alt="score against the share of synthetic '
        'records mixed into training"></figure>',
        _scores_table(report),
        _method(report),
    ])


def blend_figure(report: Mapping[str, Any]) -> str:
    """One panel per metric: mean ± one standard error at each ratio, the real-only
    score as a dashed line, and the ratio recommended for the metric's outcome marked."""
    metrics = report["metrics"]
    ratios = report["ratios"]
    positions = np.arange(len(ratios))
    chosen = {rec["outcome"]: ratios.index(rec["ratio"]) for rec in report["recommendations"]}
    figure = Figure(figsize=(3.6 * len(metrics) + 0.4, 3.0), layout="constrained")
    for ax, (name, metric) in zip(figure.subplots(1, len(metrics), squeeze=False)[0],
                                  metrics.items()):
        mean, se = _floats(metric["mean"]), _floats(metric["se"])
        ax.axhline(mean[0], color=REAL_COLOUR, linestyle="--", linewidth=1,
                   label="your records alone")
        ax.errorbar(positions, mean, yerr=se, color=SYNTHETIC_COLOUR, marker="o",
                    markersize=4, capsize=3, label="with synthetic records")
        mark = chosen[metric["outcome"]]
        ax.plot(positions[mark], mean[mark], marker="o", markersize=10, fillstyle="none",
                color="#1a7f37", linestyle="none", label="recommended")
        ax.set_xticks(positions, [ratio_label(r) for r in ratios], fontsize=7)
        ax.set_xlabel("synthetic records per real training record", fontsize=8)
        direction = "higher is better" if metric["higher_is_better"] else "lower is better"
        ax.set_title(f"{name} ({direction})", fontsize=9, parse_math=False)
        ax.tick_params(labelsize=7)
    figure.axes[0].legend(fontsize=7, frameon=False)
    return png_data_uri(figure)


def _scores_table(report: Mapping[str, Any]) -> str:
    """One row per ratio; a row recommended for some outcome is highlighted and says so."""
    metrics = report["metrics"]
    head = "".join(f"<th>{esc(name)} (mean ± SE; SD)</th>" for name in metrics)
    rows = []
    for i, (ratio, added) in enumerate(zip(report["ratios"],
                                           report["synthetic_records_with_all_patients"])):
        cells = "".join(f"<td>{_cell(m['mean'][i], m['se'][i], m['sd'][i])}</td>"
                        for m in metrics.values())
        chosen = [rec["outcome"] for rec in report["recommendations"] if rec["ratio"] == ratio]
        marker = ' class="chosen"' if chosen else ""
        rows.append(f"<tr{marker}><td>{ratio_label(ratio)}</td><td>{added}</td>{cells}"
                    f"<td>{esc(', '.join(chosen))}</td></tr>")
    return ("<table><tr><th>Synthetic : real</th><th>Synthetic records added to all your "
            f"patients</th>{head}<th>Recommended for</th></tr>\n" + "\n".join(rows)
            + "</table>")


def _method(report: Mapping[str, Any]) -> str:
    protocol = report["protocol"]
    models = {m["outcome"]: m["model"] for m in report["metrics"].values()}
    items = [
        ("Splits", f"{protocol['repeats']} × {protocol['folds']}-fold cross-validation over "
                   f"your {report['real_records']} real records, stratified by "
                   f"{protocol['stratified_by']} (seed {protocol['seed']}): every test fold "
                   "holds real records only; synthetic records, drawn from the cohort of "
                   f"{report['synthetic_records']}, join the training folds only."),
        ("Models", "; ".join(f"{outcome}: {model}" for outcome, model in models.items())),
        *((f"Recommendation for {rec['outcome']}", rec["rule"] + ".")
          for rec in report["recommendations"]),
        ("Your patients and the cohort", "Your patients helped train the cohort, under its "
                                         "differential-privacy guarantee: scoring on them "
                                         "flatters the cohort a little (without DP, much "
                                         "more), so read a small gain with care."),
        ("Where this stays", "Computed at this site from its own records; nothing was sent "
                             "anywhere and no privacy budget was spent."),
    ]
    body = "".join(f"<dt>{esc(name)}</dt><dd>{esc(text)}</dd>" for name, text in items)
    return f"<h2>How this was measured</h2>\n<dl>{body}</dl>"


def _inputs(report: Mapping[str, Any]) -> str:
    """What the page is about: the files, the study and whether its signature was checked."""
    inputs = {**(report.get("inputs") or {}),
              "schema": (report.get("schema") or {}).get("name")}
    rows = "".join(f"<tr><th>{label}</th><td>{esc(inputs[key])}</td></tr>"
                   for key, label in _INPUT_LABELS if inputs.get(key))
    return f"<table>{rows}</table>" if rows else ""


def _cell(mean: float | None, se: float | None, sd: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {se or 0:.3f}; {sd or 0:.3f}"


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)
