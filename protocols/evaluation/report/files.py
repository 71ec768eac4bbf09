"""Evaluate a cohort file against real record files: what both `evaluate` commands run.

Every input is validated against the schema first (a bad file is refused with
the usual one-paragraph message, before anything is written); the report is
then written as report.html with report.json beside it, each replaced whole
or not at all. The cohort's manifest, when one lists the file, supplies the
report's ε/δ statement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from protocols.errors import FedsynthError, RecordError
from protocols.evaluation import evaluate_cohort
from protocols.evaluation.report.html import write_report
from protocols.records import check_file
from protocols.release.manifest import MANIFEST_NAME
from protocols.schema import Schema, load_schema

MIN_ROWS = 20


def evaluate_files(schema_path: Path, real_paths: Sequence[Path], synthetic_path: Path,
                   out_html: Path, holdout_paths: Sequence[Path] = (),
                   manifest_path: Path | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Score `synthetic_path` against the pooled `real_paths`; write the report.

    `extra` replaces top-level report entries before it is written (the demo
    sets its title and adds the study's federated scores)."""
    inputs = [schema_path, *real_paths, synthetic_path, *holdout_paths]
    _refuse_bad_destination(out_html, inputs)
    schema = load_schema(schema_path)
    real = _records(schema, real_paths, "real records")
    synthetic = _records(schema, [synthetic_path], "synthetic cohort")
    holdout = _records(schema, holdout_paths, "held-out records") if holdout_paths else None
    labels = {"real": ", ".join(str(p) for p in real_paths), "synthetic": str(synthetic_path),
              "holdout": ", ".join(str(p) for p in holdout_paths) or None}
    report = evaluate_cohort(schema, real, synthetic, holdout=holdout, labels=labels,
                             manifest=_manifest_for(synthetic_path, manifest_path))
    report.update(extra or {})
    write_report(report, out_html)
    return report


def score_lines(report: dict[str, Any], out_html: Path) -> str:
    """The headline scores and where the report went, as short lines for a terminal."""
    shown = []
    for key, value in report["scores"].items():
        text = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float)
                                            else str(value))
        shown.append(f"  {key.replace('_', ' ')}: {text}")
    return ("scores:\n" + "\n".join(shown)
            + f"\nreport: {out_html} (and {out_html.with_suffix('.json')})")


def _records(schema: Schema, paths: Sequence[Path], what: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        validation = check_file(path, schema)
        validation.raise_if_invalid()
        frames.append(validation.parsed)
    pooled = pd.concat(frames, ignore_index=True)
    if len(pooled) < MIN_ROWS:
        raise RecordError(f"The {what} ({', '.join(map(str, paths))}) hold {len(pooled)} valid "
                          f"rows; an evaluation needs at least {MIN_ROWS} to mean anything.")
    return pooled


def _refuse_bad_destination(out_html: Path, inputs: Sequence[Path]) -> None:
    if out_html.suffix.lower() != ".html":
        raise FedsynthError(f"--out {out_html}: the report must be an .html file "
                            "(report.json is written beside it).")
    targets = {out_html.resolve(), out_html.with_suffix(".json").resolve()}
    clash = [p for p in inputs if p.resolve() in targets]
    if clash:
        raise FedsynthError(f"--out {out_html} would overwrite the input {clash[0]}; "
                            "choose another report path.")
    if not out_html.parent.is_dir():
        raise FedsynthError(f"--out {out_html}: the folder {out_html.parent} does not exist.")


def _manifest_for(synthetic_path: Path, manifest_path: Path | None) -> dict[str, Any] | None:
    """The given manifest, or the one beside the cohort when it lists the cohort's file."""
    path = manifest_path or synthetic_path.parent / MANIFEST_NAME
    if not path.is_file():
        if manifest_path:
            raise FedsynthError(f"Manifest {manifest_path} does not exist.")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FedsynthError(f"Manifest {path} is not readable JSON: {exc}.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("privacy", {}), dict):
        raise FedsynthError(f"Manifest {path} is not a fedsynth manifest (a JSON object with "
                            "a 'privacy' section).")
    if manifest_path is None and synthetic_path.name not in manifest.get("files", {}):
        return None  # a manifest of some other file in the same folder
    return manifest
