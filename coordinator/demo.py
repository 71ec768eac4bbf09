"""The embedded default study: the built-in registry, simulated end to end.

`fedsynth-coordinator demo --out DIR` writes the simulated hospitals' CSV files
and the schema into DIR/sites and DIR/schema.yaml, runs a full federated DP
study over them in Flower's simulation engine, and leaves the cohort, its
manifest and the checkpoints beside them.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.cohort import Release
from coordinator.server_app import ProgressFn
from coordinator.simulation import simulate_study
from protocols.demo_registry import simulate_registry
from protocols.errors import FedsynthError
from protocols.manifest import MANIFEST_NAME
from protocols.plan import StudyPlan


def run_demo(out_dir: Path, plan: StudyPlan, progress: ProgressFn, n_sites: int = 6) -> Release:
    _refuse_foreign_folder(out_dir)
    registry = simulate_registry(seed=plan.seed, n_sites=n_sites)
    sites_dir = out_dir / "sites"
    sites_dir.mkdir(parents=True, exist_ok=True)
    schema_path = out_dir / "schema.yaml"
    schema_path.write_text(registry.schema_yaml, encoding="utf-8")
    paths = []
    for name, frame in registry.sites.items():
        path = sites_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    sizes = ", ".join(f"{name} ({len(f)})" for name, f in registry.sites.items())
    progress(f"built-in registry: {len(paths)} hospitals: {sizes}; schema {schema_path}")
    return simulate_study(schema_path, paths, plan, out_dir, progress)


def _refuse_foreign_folder(out_dir: Path) -> None:
    """Never write over a folder that holds something other than an earlier demo."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
        raise FedsynthError(f"{out_dir} already exists and holds other files; the demo only "
                            "writes into an empty folder (or over an earlier demo's output).")
