"""An evaluation report as one self-contained HTML page a clinician can read.

`render_report` turns the plain JSON report of
`protocols.evaluation.evaluate_cohort` into a single page: figures are inline
PNG data URIs (drawn by `protocols.report_figures`), the style sheet is inline,
and there is no script, font, link or other external resource; a
Content-Security-Policy forbids loading one, so the page opens offline on a
hospital workstation and travels as one file.

Column names and category labels come from users' files, so every string taken
from the report is HTML-escaped: table cells are escaped unless this module
built them itself as `_Html`. `write_report` writes the page and the report's
JSON side by side, each atomically.
"""

from __future__ import annotations

import html
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from protocols.report_figures import association_figure, km_figure, marginal_figure

MISSING = "—"
WORST_PAIRS_SHOWN = 15
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:15px/1.45 system-ui,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2328;max-width:1100px;
margin:0 auto;padding:1em 1.5em 3em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}
.banner{background:#fff4ce;border:1px solid #d4a72c;padding:.5em .8em;font-weight:600}
.warn,.ok{border-left:4px solid #cf222e;background:#ffebe9;padding:.5em .8em}
.ok{border-color:#1a7f37;background:#dafbe1}.scroll{overflow-x:auto}.why{color:#57606a}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr.flagged td{background:#ffebe9;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:.5em 0}img{max-width:100%}
dt{font-weight:600;margin-top:.7em}dd{margin-left:1.2em}code{word-break:break-all}
"""

# score name: (label, ideal value, why it can be missing, plain-language meaning)
SCORE_ROWS: dict[str, tuple[str, str, str, str]] = {
    "column_shapes": ("Column shapes", "1", "no columns compared",
                      "How closely each column's distribution matches the real one."),
    "pairwise": ("Pairwise structure", "1", "no column pairs compared",
                 "How well the relationships between pairs of columns are kept."),
    "strong_associations_kept": ("Strong associations kept", "1", "no strong real association",
                                 "Share of the strong real associations the cohort keeps."),
    "tstr_ratio": ("Utility ratio (TSTR / TRTR)", "1 (≥ 0.85 good)", "no prediction target",
                   "A model trained on synthetic records, tested on real patients, relative "
                   "to one trained on real records."),
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
    "km_distance": ("Kaplan–Meier distance", "0", "no survival time and event declared",
                    "Largest gap between the real and synthetic survival curves."),
    "hr_direction_agreement": ("Hazard-ratio direction agreement", "1",
                               "no survival outcome or no significant real hazard ratio",
                               "Share of significant real hazard ratios that the cohort "
                               "points the same way."),
    "bias_flags": ("Bias flags", "0", "no categories compared",
                   "Categories erased, or shrunk below half of their real share."),
}


class _Html(str):
    """Markup built by this module: `_table` inserts it as is instead of escaping it."""


def render_report(report: Mapping[str, Any]) -> str:
    """The report as one HTML page; a section whose data is absent is left out."""
    sections = (_header, _privacy_statement, _scores, _marginals, _associations, _utility,
                _survival, _privacy, _bias, _federated, _methods)
    body = "\n".join(part for part in (section(report) for section in sections) if part)
    title = _esc(report.get("title") or "Synthetic cohort evaluation")
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
            "</body>\n</html>\n")


def write_report(report: Mapping[str, Any], html_path: Path) -> tuple[Path, Path]:
    """Write the page at `html_path` and the report as JSON beside it (same stem, .json).

    Both texts are built before anything is written (a NaN in the report fails
    here, as strict JSON has none), and each file goes to a temporary file in the
    same folder that os.replace moves into place: no reader ever sees a partial
    file and a failure leaves no stray one.
    """
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    if json_path == html_path:
        raise ValueError(f"{html_path}: the HTML report needs a name that does not end in .json")
    page = render_report(report)
    text = json.dumps(dict(report), indent=2, allow_nan=False) + "\n"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(html_path, page)
    _replace_atomically(json_path, text)
    return html_path, json_path


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    handle = tmp.open("x", encoding="utf-8", newline="\n")
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _header(report: Mapping[str, Any]) -> str:
    parts = [f"<h1>{_esc(report.get('title') or 'Synthetic cohort evaluation')}</h1>",
             '<p class="banner">This cohort is SYNTHETIC: generated records, not real '
             "patients.</p>"]
    schema = report.get("schema")
    if schema:
        name, digest = _esc(schema.get("name") or "unnamed"), _esc(schema.get("sha256"))
        parts.append(f"<p>Data dictionary (schema): <strong>{name}</strong>, SHA-256 "
                     f"<code>{digest}</code></p>")
    inputs = report.get("inputs")
    if inputs:
        roles = (("real", "Real records (training)"), ("synthetic", "Synthetic cohort"),
                 ("holdout", "Held-out real records"))
        rows = [(name, inputs.get(key) or "not given", _value(inputs.get(f"{key}_rows")))
                for key, name in roles]
        parts += ["<h2>Inputs</h2>", _table(("Records", "File", "Rows"), rows)]
    return "\n".join(parts)


def _privacy_statement(report: Mapping[str, Any]) -> str:
    statement = report.get("privacy_statement")
    parts = ["<h2>Privacy guarantee</h2>"]
    if statement is None:
        return parts[0] + ('\n<p class="warn">No manifest was found for this cohort, so its '
                           "privacy guarantee is unknown. Treat it as unprotected until its "
                           "manifest has been checked.</p>")
    if not statement.get("private"):
        parts.append('<p class="warn">This cohort was trained <strong>WITHOUT differential '
                     "privacy</strong>: it carries no formal privacy guarantee.</p>")
    else:
        epsilon = _general(statement.get("epsilon_target_per_site"))
        delta = _general(statement.get("delta_per_site"))
        parts.append('<p class="ok">Trained with differential privacy: <strong>(ε = '
                     f"{epsilon}, δ = {delta}) per site, record-level</strong>.</p>")
    if statement.get("guarantee"):
        parts.append(f"<p>{_esc(statement['guarantee'])}</p>")
    if statement.get("contributors"):
        names = ", ".join(_esc(name) for name in statement["contributors"])
        parts.append(f"<p>Contributing sites: {names}.</p>")
    sites = statement.get("sites") or {}
    if sites:
        rows = [(name, _general(site.get("epsilon_spent")), _general(site.get("delta")),
                 _value(site.get("steps"))) for name, site in sites.items()]
        parts.append(_table(("Site", "ε spent", "δ", "Training steps"), rows))
    return "\n".join(parts)


def _scores(report: Mapping[str, Any]) -> str:
    scores = report.get("scores")
    if not scores:
        return ""
    rows = []
    for name in sorted(scores, key=_score_order):
        label, ideal, reason, meaning = SCORE_ROWS.get(name, (name, MISSING, "", ""))
        rows.append((label, _value(scores[name], reason), ideal, meaning))
    return "<h2>Headline scores</h2>\n" + _table(("Score", "Value", "Ideal", "What it means"),
                                                  rows)


def _marginals(report: Mapping[str, Any]) -> str:
    marginals = (report.get("figures") or {}).get("marginals") or []
    columns = (report.get("fidelity") or {}).get("columns") or []
    if not marginals and not columns:
        return ""
    parts = ["<h2>Column distributions</h2>"]
    if marginals:
        images = "".join(_image(marginal_figure(m), f"Distribution of {m['column']}: real "
                                "and synthetic") for m in marginals)
        parts += ["<p>Share of rows in each category or range: real records in blue, "
                  "synthetic cohort in red.</p>", f'<div class="grid">{images}</div>']
    if columns:
        rows = [(c["column"], c["type"], c["metric"], _value(c["score"]),
                 _share(c["missing_real"]), _share(c["missing_synthetic"])) for c in columns]
        parts.append(_table(("Column", "Type", "Metric", "Score", "Missing (real)",
                             "Missing (synthetic)"), rows))
    return "\n".join(parts)


def _associations(report: Mapping[str, Any]) -> str:
    association = (report.get("figures") or {}).get("association")
    pairs = (report.get("fidelity") or {}).get("pairs") or []
    uri = association_figure(association) if association else None
    if uri is None and not pairs:
        return ""
    parts = ["<h2>Associations between columns</h2>"]
    if uri:
        parts += [_image(uri, "Association heatmaps: real and synthetic"),
                  "<p>Strength and direction of the association of each pair of columns, "
                  "real records left and synthetic cohort right, on one scale from -1 to 1; "
                  "grey cells have no value.</p>"]
    if pairs:
        worst = sorted(pairs, key=lambda p: (p["score"] is None, p["score"] or 0.0))
        worst = worst[:WORST_PAIRS_SHOWN]
        rows = [(p["a"], p["b"], p["metric"], _value(p["score"]),
                 _value(p["association_real"]), _value(p["association_synthetic"]))
                for p in worst]
        parts += [f"<p>The {len(worst)} lowest-scoring of {len(pairs)} pairs in all.</p>",
                  _table(("Column", "Column", "Metric", "Score", "Association (real)",
                          "Association (synthetic)"), rows)]
    return "\n".join(parts)


def _utility(report: Mapping[str, Any]) -> str:
    utility = report.get("utility")
    if not utility:
        return ""
    facts = _table(("", ""), [
        ("Target", utility.get("target")), ("Task", utility.get("task")),
        ("Metric", utility.get("metric")), ("Model", utility.get("model")),
        ("Trained on real, tested on real (TRTR)", _value(utility.get("trtr"))),
        ("Trained on synthetic, tested on real (TSTR)", _value(utility.get("tstr"))),
        ("Ratio (1 is parity, ≥ 0.85 good)", _value(utility.get("ratio")))])
    return ("<h2>Utility: train on synthetic, test on real</h2>\n" + facts
            + f"\n<p>{_esc(utility.get('protocol') or '')}</p>")


def _survival(report: Mapping[str, Any]) -> str:
    survival = report.get("survival")
    if not survival:
        return ""
    parts = ["<h2>Survival</h2>", _table(("", ""), [
        ("Time column", survival.get("time")), ("Event column", survival.get("event")),
        ("Kaplan–Meier distance (largest gap, 0 ideal)", _value(survival.get("km_distance"))),
        ("Kaplan–Meier mean gap", _value(survival.get("km_mean_distance"))),
        ("Hazard-ratio direction agreement (1 ideal)",
         _value(survival.get("hr_direction_agreement"),
                SCORE_ROWS["hr_direction_agreement"][2]))])]
    km = (report.get("figures") or {}).get("km")
    if km:
        parts.append(_image(km_figure(km, survival.get("time") or "time"),
                            "Kaplan–Meier curves: real and synthetic"))
    ratios = survival.get("hazard_ratios") or []
    if ratios:
        rows = [(h["covariate"], _value(h["real"]), _p_value(h["real_p"]),
                 _value(h["synthetic"]), _value(h["same_direction"])) for h in ratios]
        parts.append(_table(("Covariate", "Hazard ratio (real)", "p (real)",
                             "Hazard ratio (synthetic)", "Same direction"), rows))
    return "\n".join(parts)


def _privacy(report: Mapping[str, Any]) -> str:
    privacy = report.get("privacy")
    if not privacy:
        return ""
    facts = _table(("", ""), [
        ("DCR share (0.5 ideal, ≤ 0.6 good)", _value(privacy.get("dcr_share"),
                                                      SCORE_ROWS["dcr_share"][2])),
        ("Exact copies (0 ideal)", _value(privacy.get("exact_copies"))),
        ("Exact copy share", _value(privacy.get("exact_copy_share"))),
        ("Membership inference AUC (0.5 ideal)", _value(privacy.get("mia_auc"),
                                                         SCORE_ROWS["mia_auc"][2]))])
    return (f"<h2>Privacy risk checks</h2>\n{facts}\n"
            f"<p>{_esc(privacy.get('note') or '')}</p>")


def _bias(report: Mapping[str, Any]) -> str:
    bias = report.get("bias")
    if bias is None:
        return ""
    flagged = sum(1 for row in bias if row.get("flag"))
    rows = [(b["column"], b["category"], _share(b["real"]), _share(b["synthetic"]),
             _value(b["ratio"]), _Html(f"<strong>⚠ {_esc(b['flag'])}</strong>")
             if b.get("flag") else "") for b in bias]
    classes = ["flagged" if b.get("flag") else "" for b in bias]
    return ("<h2>Representation of categories</h2>\n"
            f"<p>{flagged} of {len(bias)} categories flagged: <em>erased</em> means the "
            "synthetic cohort has none of it, <em>shrunk</em> that its share fell below half "
            "of the real share.</p>\n"
            + _table(("Column", "Category", "Real", "Synthetic", "Ratio (synthetic / real)",
                      "Flag"), rows, classes))


def _federated(report: Mapping[str, Any]) -> str:
    federated = report.get("federated")
    if not federated:
        return ""
    sites = federated.get("sites") or {}
    aggregate = federated.get("aggregate") or {}
    names = {*aggregate, *(name for scores in sites.values() for name in scores)}
    rows = [(SCORE_ROWS.get(name, (name,))[0],
             *(_value(sites[site].get(name)) for site in sites),
             *(_value((aggregate.get(name) or {}).get(k)) for k in ("mean", "min", "max")))
            for name in sorted(names, key=_score_order)]
    return ("<h2>Federated evaluation</h2>\n"
            + _table(("Score", *sites, "Mean", "Min", "Max"), rows)
            + f"\n<p>{_esc(federated.get('note') or '')}</p>")


def _methods(report: Mapping[str, Any]) -> str:
    methods = report.get("methods")
    if not methods:
        return ""
    items = "\n".join(f"<dt>{_esc(name)}</dt><dd>{_esc(text)}</dd>"
                      for name, text in methods.items())
    return f"<h2>How each score is computed</h2>\n<dl>\n{items}\n</dl>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
           row_classes: Sequence[str] | None = None) -> str:
    """A table whose cells are escaped unless built here as `_Html`. With all headers
    empty it is a list of facts: each row's first cell is that row's header."""
    head = "" if not any(headers) else (
        "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers) + "</tr></thead>")
    lines = []
    for index, row in enumerate(rows):
        cls = row_classes[index] if row_classes else ""
        cells = [_cell(value, "th" if not head and i == 0 else "td")
                 for i, value in enumerate(row)]
        lines.append(f'<tr class="{cls}">' if cls else "<tr>")
        lines.append("".join(cells) + "</tr>")
    return f'<div class="scroll"><table>{head}<tbody>{"".join(lines)}</tbody></table></div>'


def _cell(value: Any, tag: str) -> str:
    text = value if isinstance(value, _Html) else _esc(MISSING if value is None else value)
    return f'<{tag} scope="row">{text}</{tag}>' if tag == "th" else f"<td>{text}</td>"


def _image(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_esc(alt)}"></figure>'


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score_order(name: str) -> tuple[int, str]:
    order = list(SCORE_ROWS)
    return (order.index(name), "") if name in SCORE_ROWS else (len(order), name)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _value(value: Any, reason: str = "") -> _Html:
    """A score with 3 decimals, a count as an integer, a missing one as "—" and why."""
    if _absent(value):
        why = f' <span class="why">({_esc(reason)})</span>' if reason else ""
        return _Html(MISSING + why)
    if isinstance(value, bool):
        return _Html("yes" if value else "no")
    if isinstance(value, int):
        return _Html(f"{value:,}")
    return _Html(f"{value:.3f}")


def _general(value: float | None) -> str:
    """ε and δ as written in a privacy statement (δ = 1e-05, not 0.000)."""
    return MISSING if _absent(value) else f"{value:.4g}"


def _share(value: float | None) -> str:
    if _absent(value):
        return MISSING
    return "< 0.1%" if 0 < value < 0.001 else f"{value:.1%}"


def _p_value(value: float | None) -> str:
    if _absent(value):
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
