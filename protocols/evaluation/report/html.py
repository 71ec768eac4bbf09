"""An evaluation report as one self-contained HTML page a clinician can read.

`render_report` turns the plain JSON report of
`protocols.evaluation.evaluate_cohort` into a single page: figures are inline
PNG data URIs (drawn by `protocols.evaluation.report.figures`), the style sheet is inline,
and there is no script, font, link or other external resource; a
Content-Security-Policy forbids loading one, so the page opens offline on a
hospital workstation and travels as one file.

Column names and category labels come from users' files, so every string taken
from the report is HTML-escaped (tables and cell formats live in
`protocols.evaluation.report.tables`). `write_report` writes the page and the report's
JSON side by side, each atomically.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocols.evaluation.report.blend import blend_fragment
from protocols.evaluation.report.figures import association_figure, km_figure, marginal_figure
from protocols.evaluation.report.tables import (SCORE_ROWS, bias_section, esc, federated_section,
                                                general_text, p_text, privacy_section,
                                                scores_section, share_text, table,
                                                utility_section, value_text)

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
.advice{border-left:4px solid #1a7f37;background:#dafbe1;padding:.5em .8em;font-weight:600}
tr.chosen td{background:#dafbe1}
"""


def render_report(report: Mapping[str, Any]) -> str:
    """The report as one HTML page; a section whose data is absent is left out."""
    sections = (_header, _privacy_statement, scores_section, _marginals, _associations,
                utility_section, _survival, privacy_section, bias_section, federated_section,
                _blend, _methods)
    body = "\n".join(part for part in (section(report) for section in sections) if part)
    title = esc(report.get("title") or "Synthetic cohort evaluation")
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
    parts = [f"<h1>{esc(report.get('title') or 'Synthetic cohort evaluation')}</h1>",
             '<p class="banner">This cohort is SYNTHETIC: generated records, not real '
             "patients.</p>"]
    schema = report.get("schema")
    if schema:
        name, digest = esc(schema.get("name") or "unnamed"), esc(schema.get("sha256"))
        parts.append(f"<p>Data dictionary (schema): <strong>{name}</strong>, SHA-256 "
                     f"<code>{digest}</code></p>")
    inputs = report.get("inputs")
    if inputs:
        roles = (("real", "Real records (training)"), ("synthetic", "Synthetic cohort"),
                 ("holdout", "Held-out real records"))
        rows = [(name, inputs.get(key) or "not given", value_text(inputs.get(f"{key}_rows")))
                for key, name in roles]
        parts += ["<h2>Inputs</h2>", table(("Records", "File", "Rows"), rows)]
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
        epsilon = general_text(statement.get("epsilon_target_per_site"))
        delta = general_text(statement.get("delta_per_site"))
        parts.append('<p class="ok">Trained with differential privacy: <strong>(ε = '
                     f"{epsilon}, δ = {delta}) per site, record-level</strong>.</p>")
    if statement.get("guarantee"):
        parts.append(f"<p>{esc(statement['guarantee'])}</p>")
    if statement.get("cohort_model"):
        parts.append(f"<p>How the cohort was made: {esc(statement['cohort_model'])}. This is "
                     "post-processing of the private releases, so it adds no privacy cost.</p>")
    if statement.get("contributors"):
        names = ", ".join(esc(name) for name in statement["contributors"])
        parts.append(f"<p>Contributing sites: {names}.</p>")
    sites = statement.get("sites") or {}
    if sites:
        rows = [(name, general_text(site.get("epsilon_spent")), general_text(site.get("delta")),
                 value_text(site.get("steps"))) for name, site in sites.items()]
        parts.append(table(("Site", "ε spent", "δ", "Training steps"), rows))
    return "\n".join(parts)


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
        rows = [(c["column"], c["type"], c["metric"], value_text(c["score"]),
                 share_text(c["missing_real"]), share_text(c["missing_synthetic"])) for c in columns]
        parts.append(table(("Column", "Type", "Metric", "Score", "Missing (real)",
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
        rows = [(p["a"], p["b"], p["metric"], value_text(p["score"]),
                 value_text(p["association_real"]), value_text(p["association_synthetic"]))
                for p in worst]
        parts += [f"<p>The {len(worst)} lowest-scoring of {len(pairs)} pairs in all.</p>",
                  table(("Column", "Column", "Metric", "Score", "Association (real)",
                          "Association (synthetic)"), rows)]
    return "\n".join(parts)


def _survival(report: Mapping[str, Any]) -> str:
    survival = report.get("survival")
    if not survival:
        return ""
    parts = ["<h2>Survival</h2>", table(("", ""), [
        ("Time column", survival.get("time")), ("Event column", survival.get("event")),
        ("Kaplan–Meier distance (largest gap, 0 ideal)",
         value_text(survival.get("km_distance"), SCORE_ROWS["km_distance"][2])),
        ("Kaplan–Meier mean gap", value_text(survival.get("km_mean_distance"))),
        ("Hazard-ratio direction agreement (1 ideal)",
         value_text(survival.get("hr_direction_agreement"),
                SCORE_ROWS["hr_direction_agreement"][2]))])]
    km = (report.get("figures") or {}).get("km")
    if km:
        parts.append(_image(km_figure(km, survival.get("time") or "time"),
                            "Kaplan–Meier curves: real and synthetic"))
    ratios = survival.get("hazard_ratios") or []
    if ratios:
        rows = [(h["covariate"], value_text(h["real"]), p_text(h["real_p"]),
                 value_text(h["synthetic"]), value_text(h["same_direction"])) for h in ratios]
        parts.append(table(("Covariate", "Hazard ratio (real)", "p (real)",
                             "Hazard ratio (synthetic)", "Same direction"), rows))
    return "\n".join(parts)


def _blend(report: Mapping[str, Any]) -> str:
    """A hospital's blending advice (`fedsynth-node blend`), when the report carries one:
    computed at that hospital from its own records, so only the simulated demo shows it."""
    blend = report.get("blend")
    if not blend:
        return ""
    return (f"<h2>How much of the cohort {esc(blend.get('site', 'a hospital'))} should mix "
            "into its own training set</h2>\n<p>Measured at that hospital on its own patients "
            "(<code>fedsynth-node blend</code>); in a real consortium this stays at the "
            "hospital.</p>\n" + blend_fragment(blend))


def _methods(report: Mapping[str, Any]) -> str:
    methods = report.get("methods")
    if not methods:
        return ""
    items = "\n".join(f"<dt>{esc(name)}</dt><dd>{esc(text)}</dd>"
                      for name, text in methods.items())
    return f"<h2>How each score is computed</h2>\n<dl>\n{items}\n</dl>"


def _image(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"></figure>'
