"""`fedsynth-node blend`: how much of the released cohort a site should mix into its own
training set, measured on its own patients.

Every input is checked before anything is computed, and refused with one paragraph
naming the file, what is wrong and the rule: the synthetic input must be a fedsynth
cohort (a folder whose manifest.json marks it synthetic and lists the file; or that
file itself); its signature and files must verify (against the consortium key in
the kit, when one is given);
the manifest's schema hash must be this schema's; the site's records must be real
records (not a cohort) that conform to the schema; the schema (or --target) must
name an outcome. The curve is computed by `protocols.evaluation.blend`, then
blend.json and blend.html are written to a staging folder inside --out and moved into
place, so a failed run leaves no partial output. Nothing leaves the site and nothing
is charged to its privacy budget: the cohort is already released, and the result
stays here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from protocols.errors import FedsynthError
from protocols.evaluation.blend import blend_curve
from protocols.evaluation.report.blend import blend_report, render_blend_page
from protocols.kit_layout import MANIFEST_SIGNING_PUB
from protocols.records import check_file
from protocols.release.manifest import CSV_NAME, MANIFEST_NAME, PROVENANCE, Release
from protocols.release.provenance import synthetic_provenance
from protocols.release.verification import load_trusted_key, verify_release
from protocols.schema import Schema, load_schema

BLEND_JSON = "blend.json"
BLEND_HTML = "blend.html"


def run_blend(schema_path: Path, data_path: Path, synthetic_path: Path, out_dir: Path,
              kit: Path | None = None, target: str | None = None, seed: int = 0
              ) -> dict[str, Any]:
    """Check the inputs, measure the curve, write blend.json and blend.html into
    `out_dir`; the report as written."""
    schema = load_schema(schema_path)
    cohort, records = find_cohort(synthetic_path)
    _refuse_bad_destination(out_dir, cohort)
    signer = _verify(cohort, kit)
    _refuse_other_schema(cohort, schema, schema_path)
    outcome_target, survival = _outcomes(schema, schema_path, target)
    real = _real_records(data_path, schema)
    synthetic = _records(records, schema)
    result = blend_curve(schema, real, synthetic, outcome_target, survival, seed=seed)
    report = {"schema": {"name": schema.name, "sha256": schema.sha256},
              "inputs": {"records": str(data_path), "cohort": str(records),
                         "study": cohort.manifest.get("study"), "signature": signer},
              **blend_report(result)}
    _write(out_dir, report)
    return report


def find_cohort(path: Path) -> tuple[Release, Path]:
    """The release at `path` (a release folder, or a records file inside one) and its
    records file; a `FedsynthError` when it is not a fedsynth cohort."""
    if path.is_dir():
        directory, records = path, path / CSV_NAME
    elif path.is_file():
        directory, records = path.parent, path
    else:
        raise FedsynthError(f"--synthetic {path} does not exist: give the folder of a released "
                            f"fedsynth cohort, or the {CSV_NAME} inside it.")
    manifest = _manifest(directory / MANIFEST_NAME)
    files = manifest.get("files") if manifest else None
    if not (manifest and manifest.get("synthetic") is True
            and manifest.get("provenance") == PROVENANCE and isinstance(files, dict)
            and records.name in files and records.is_file()):
        raise FedsynthError(
            f"--synthetic {path} is not a fedsynth cohort: a cohort is the folder a fedsynth "
            f"study released, whose {MANIFEST_NAME} marks it synthetic and lists its "
            f"{CSV_NAME}. Blending advice is only given for a released cohort, never for "
            "other records.")
    return Release(directory, manifest), records


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _verify(cohort: Release, kit: Path | None) -> str:
    """Check the release's signature and files (against the kit's consortium key when
    `kit` is given); say what was checked."""
    trusted = load_trusted_key(kit / MANIFEST_SIGNING_PUB) if kit else None
    check = verify_release(cohort.directory, trusted)
    if not check.ok:
        problems = "; ".join(str(problem) for problem in check.problems)
        against = f"the consortium key in {kit / MANIFEST_SIGNING_PUB}" if kit else "its manifest"
        raise FedsynthError(
            f"{cohort.directory} does not verify against {against}: {problems}. A cohort is "
            "blended in only when it is signed and no file changed since (check it with "
            "`fedsynth-node verify`).")
    if kit is None:
        return (f"files match the manifest, signed by key {check.fingerprint}; the signer "
                "was not checked against the consortium key (no --kit given)")
    return f"verified: signed by the consortium key {check.fingerprint}"


def _refuse_other_schema(cohort: Release, schema: Schema, schema_path: Path) -> None:
    declared = cohort.manifest.get("schema_sha256")
    if declared != schema.sha256:
        raise FedsynthError(
            f"{cohort.directory / MANIFEST_NAME}: the cohort follows the schema with SHA-256 "
            f"{str(declared)[:12]}…, but {schema_path} has SHA-256 {schema.sha256[:12]}…. "
            "A cohort is compared with records of the same data contract only: give the "
            "schema the study used.")


def _outcomes(schema: Schema, schema_path: Path, target: str | None
              ) -> tuple[str | None, tuple[str, str] | None]:
    """The target (--target, else the schema's `evaluation: target`) and survival pair."""
    modelled = [c.name for c in schema.features]
    if target is not None and target not in modelled:
        raise FedsynthError(f"--target {target!r} is not a modelled column of {schema_path} "
                            f"(columns: {', '.join(modelled)}).")
    chosen = target or schema.roles.target
    if chosen is None and schema.roles.survival is None:
        raise FedsynthError(
            f"{schema_path} declares no outcome to predict: add `evaluation: {{target: "
            "COLUMN}}` (or a survival pair) to the schema, or give --target COLUMN.")
    return chosen, schema.roles.survival


def _real_records(path: Path, schema: Schema) -> pd.DataFrame:
    provenance = synthetic_provenance(path)
    if provenance:
        raise FedsynthError(f"--data {path} is a SYNTHETIC fedsynth cohort ({provenance}), not "
                            "this site's patient records: the advice is measured on real "
                            "patients only.")
    return _records(path, schema)


def _records(path: Path, schema: Schema) -> pd.DataFrame:
    validation = check_file(path, schema)
    validation.raise_if_invalid()
    return validation.parsed


def _refuse_bad_destination(out_dir: Path, cohort: Release) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FedsynthError(f"--out {out_dir} is a file: give a folder for {BLEND_JSON} and "
                            f"{BLEND_HTML}.")
    if out_dir.resolve() == cohort.directory.resolve():
        raise FedsynthError(f"--out {out_dir} is the cohort's own release folder: writing "
                            "there would change a signed release; choose another folder.")


def _write(out_dir: Path, report: dict[str, Any]) -> None:
    """Both files complete in a staging folder first, then moved into `out_dir`."""
    texts = {BLEND_JSON: json.dumps(report, indent=2, allow_nan=False) + "\n",
             BLEND_HTML: render_blend_page(report)}
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fedsynth-blend-", dir=out_dir))
    try:
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8")
        for name in texts:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def add_blend_parser(sub: argparse._SubParsersAction) -> None:
    """The `blend` subcommand's arguments."""
    blend = sub.add_parser("blend", help="how much of a released cohort to mix into this "
                           "site's training set, measured on its own patients")
    blend.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    blend.add_argument("--data", type=Path, required=True, help="this site's records")
    blend.add_argument("--synthetic", type=Path, required=True,
                       help=f"the released cohort: its folder, or the {CSV_NAME} inside it")
    blend.add_argument("--out", type=Path, required=True,
                       help=f"folder for {BLEND_JSON} and {BLEND_HTML}")
    blend.add_argument("--kit", type=Path, help="this site's kit folder: the cohort must be "
                       f"signed by the consortium key in its {MANIFEST_SIGNING_PUB}")
    blend.add_argument("--target", help="the column to predict (default: the schema's "
                       "evaluation target)")
    blend.add_argument("--seed", type=int, default=0,
                       help="fixes the folds and the synthetic draws (default 0)")


def blend_command(args: argparse.Namespace) -> int:
    """Run `blend` from parsed arguments; print the advice and where it was written."""
    report = run_blend(args.schema, args.data, args.synthetic, args.out, kit=args.kit,
                       target=args.target, seed=args.seed)
    print(report["sentence"])
    if args.kit is None:
        print("note: the cohort's signature was not checked; give --kit to check it against "
              "the consortium key.")
    print(f"written: {args.out / BLEND_HTML} and {args.out / BLEND_JSON}")
    return 0
