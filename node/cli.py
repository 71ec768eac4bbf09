"""`fedsynth-node`: what a hospital's data steward runs.

`check` validates a records file against the consortium's schema and prints a
short report; it exits 0 only when every row is valid. `evaluate` scores a
synthetic cohort against the site's own records and writes report.html (and
report.json) at the hospital; nothing leaves. User errors end with
one paragraph on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protocols.cohort_evaluation import evaluate_files, score_lines
from protocols.errors import FedsynthError
from protocols.manifest import MANIFEST_NAME
from protocols.records import check_file
from protocols.schema import load_schema


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            report = evaluate_files(args.schema, [args.data], args.synthetic, args.out,
                                    holdout_paths=args.holdout)
            print(score_lines(report, args.out))
            return 0
        return _check(args.schema, args.data)
    except FedsynthError as exc:
        print(f"fedsynth-node: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsynth-node", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a records file against the schema")
    check.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    check.add_argument("--data", type=Path, required=True, help="records, CSV or Parquet")
    ev = sub.add_parser("evaluate", help="score a synthetic cohort against this site's records")
    ev.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    ev.add_argument("--data", type=Path, required=True, help="this site's records")
    ev.add_argument("--synthetic", type=Path, required=True, help="the cohort (CSV or Parquet)")
    ev.add_argument("--holdout", type=Path, action="append", default=[],
                    help="site records NOT used in training (enables DCR and membership "
                         "inference)")
    ev.add_argument("--out", type=Path, required=True,
                    help="report.html to write (report.json is written beside it)")
    return parser


def _check(schema_path: Path, data_path: Path) -> int:
    schema = load_schema(schema_path)
    validation = check_file(data_path, schema)
    synthetic = _synthetic_note(data_path)
    if synthetic:
        print(synthetic)
    if not validation.ok:
        print(f"fedsynth-node: {validation.summary()}", file=sys.stderr)
        return 1
    print(f"{data_path}: {validation.n_rows} rows, {len(schema.features)} modelled columns, "
          f"all valid against schema '{schema.name}' (sha256 {schema.sha256[:12]}…).")
    return 0


def _synthetic_note(data_path: Path) -> str | None:
    """Say plainly when a file is a fedsynth cohort rather than real records."""
    manifest = data_path.parent / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError):
        return None
    if data_path.name in files:
        return (f"note: {data_path} is a SYNTHETIC fedsynth cohort (see {manifest}), "
                "not real patient records.")
    return None


if __name__ == "__main__":
    sys.exit(main())
