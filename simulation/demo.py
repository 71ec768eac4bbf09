"""The embedded default study: the built-in registry, simulated end to end.

`fedsynth-coordinator demo --out DIR` writes the simulated hospitals' CSV files
and the schema into DIR/sites and DIR/schema.yaml, runs a full federated DP
study over them in Flower's simulation engine (with federated evaluation), and
leaves the cohort, its manifest, the checkpoints and report.html beside them.

A fifth of every simulated hospital's patients is kept out of training, in
DIR/holdout, so that the report can measure privacy risk (distance to closest
record, membership inference). The report also shows what `fedsynth-node blend`
advises the smallest hospital: how much of the cohort to mix into its own
training set, measured on its own patients. Because the demo simulated the hospitals itself,
its report also compares the cohort with their pooled records, figures
included, which a real coordinator can never do: in a real consortium the
report holds only the sites' federated scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coordinator.federated_evaluation import REPORT_NAME
from coordinator.server_app import ProgressFn
from protocols.demo_registry import simulate_registry
from protocols.errors import FedsynthError
from protocols.evaluation.blend import blend_curve
from protocols.evaluation.report.blend import blend_report
from protocols.evaluation.report.files import evaluate_files
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.records import check_file
from protocols.release.manifest import CSV_NAME, MANIFEST_NAME, Release
from protocols.schema import load_schema
from simulation.engine import simulate_study

HOLDOUT_SHARE = 0.2
DEMO_SITES = 6  # hospitals in the built-in registry: enough for SecAgg+ by default


def run_demo(out_dir: Path, plan: StudyPlan, progress: ProgressFn, n_sites: int = DEMO_SITES,
             signing_key_path: Path | None = None) -> Release:
    family_for(plan)  # the family's own rules on the plan, before anything is written
    _refuse_foreign_folder(out_dir)
    schema_path, paths, holdout = _write_registry(out_dir, plan.seed, n_sites)
    sizes = ", ".join(f"{path.stem} ({rows})" for path, rows in paths.items())
    progress(f"built-in registry: {len(paths)} hospitals: {sizes}; "
             f"{HOLDOUT_SHARE:.0%} of each held out in {holdout[0].parent}; schema {schema_path}")
    release = simulate_study(schema_path, list(paths), plan, out_dir, progress,
                             signing_key_path=signing_key_path)
    report_path = out_dir / REPORT_NAME
    blend = _blend_advice(schema_path, min(paths, key=paths.get), out_dir / CSV_NAME)
    progress(f"blending advice for {blend['site']}: {blend['sentence']}")
    extra = {"title": "Demo cohort: built-in simulated registry",
             "federated": _federated_section(report_path), "blend": blend}
    evaluate_files(schema_path, list(paths), out_dir / CSV_NAME, report_path,
                   holdout_paths=holdout, extra=extra)
    progress(f"report: {report_path}")
    return release


def _blend_advice(schema_path: Path, site_path: Path, cohort_path: Path) -> dict:
    """What `fedsynth-node blend` tells the hospital at `site_path` about the cohort."""
    schema = load_schema(schema_path)
    real, synthetic = (check_file(path, schema).parsed for path in (site_path, cohort_path))
    result = blend_curve(schema, real, synthetic, schema.roles.target, schema.roles.survival)
    return {**blend_report(result), "site": site_path.stem}


def _write_registry(out_dir: Path, seed: int, n_sites: int
                    ) -> tuple[Path, dict[Path, int], list[Path]]:
    """The schema, each hospital's training file with its size, and the held-out files."""
    registry = simulate_registry(seed=seed, n_sites=n_sites)
    rng = np.random.default_rng(seed)
    schema_path = out_dir / "schema.yaml"
    (out_dir / "sites").mkdir(parents=True, exist_ok=True)
    (out_dir / "holdout").mkdir(exist_ok=True)
    schema_path.write_text(registry.schema_yaml, encoding="utf-8")
    paths, holdout = {}, []
    for name, frame in registry.sites.items():
        held = rng.random(len(frame)) < HOLDOUT_SHARE
        path = out_dir / "sites" / f"{name}.csv"
        frame[~held].to_csv(path, index=False)
        paths[path] = int((~held).sum())
        holdout.append(out_dir / "holdout" / f"{name}.csv")
        frame[held].to_csv(holdout[-1], index=False)
    return schema_path, paths, holdout


def _federated_section(report_path: Path) -> dict | None:
    json_path = report_path.with_suffix(".json")
    if not json_path.is_file():
        return None
    return json.loads(json_path.read_text(encoding="utf-8")).get("federated")


def _refuse_foreign_folder(out_dir: Path) -> None:
    """Never write over a folder that holds something other than an earlier demo."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
        raise FedsynthError(f"{out_dir} already exists and holds other files; the demo only "
                            "writes into an empty folder (or over an earlier demo's output).")
