"""The coordinator's Flower ServerApp: the front door of the consortium side.

It wires the small modules together: the study settings from the run config,
a freshly initialised generator, FedAvg with reply checks (`strategy`), a
checkpoint and a progress line after every round (`checkpoints`), and the
release of the sampled cohort with its manifest (`cohort`), and the federated
evaluation of that cohort at the sites (`federated_evaluation`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from coordinator.checkpoints import save_checkpoint
from coordinator.cohort import CSV_NAME, Release, release_cohort
from coordinator.federated_evaluation import REPORT_NAME, evaluate_at_sites, write_study_report
from coordinator.generator_family import initial_arrays, sample_release
from coordinator.strategy import StudyStrategy
from coordinator.study import StudySettings
from protocols import messages as keys

# Under `flwr run` only Flower's own logger reaches the operator's console.
_FLOWER_LOG = logging.getLogger("flwr")
ProgressFn = Callable[[str], None]


def build_server_app(overrides: Mapping[str, Any] | None = None,
                     progress: ProgressFn | None = None,
                     outcome: dict[str, Any] | None = None) -> ServerApp:
    """A ServerApp whose run config is `overrides` on top of Flower's run config.

    When `outcome` is given, the release (key "release") or the exception that
    ended the study (key "error") is left in it for the caller: the simulation
    engine runs the ServerApp in a thread and does not re-raise its errors.
    """
    app = ServerApp()
    fixed = dict(overrides or {})
    outcome = {} if outcome is None else outcome

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            settings = StudySettings.from_run_config({**context.run_config, **fixed})
            outcome["release"] = run_study(grid, settings, progress or _FLOWER_LOG.info)
        except Exception as exc:
            outcome["error"] = exc
            raise

    return app


def run_study(grid: Grid, settings: StudySettings, progress: ProgressFn) -> Release:
    """Run every round of the study on `grid`, then release the cohort."""
    schema, plan = settings.schema, settings.plan
    initial = initial_arrays(schema, plan)
    strategy = StudyStrategy(plan, initial)
    plan_record = ConfigRecord({**plan.to_config(), keys.SCHEMA_SHA256: schema.sha256})
    started = time.monotonic()

    rounds: dict[int, ArrayRecord] = {}

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round == 0:
            return None
        if server_round == 1:
            rounds[1] = arrays  # the marginals generator cuts its coarse bins from it
        save_checkpoint(settings.out_dir, server_round, arrays, strategy.sites)
        spent = [s.epsilon for s in strategy.sites.values()]
        progress(f"round {server_round}/{plan.rounds}: {len(strategy.contributors)} sites, "
                 f"max epsilon spent {max(spent):.4f} of {plan.epsilon:g}, "
                 f"{time.monotonic() - started:.1f} s")
        return None

    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=plan.rounds,
                            train_config=plan_record, evaluate_fn=after_round)
    cohort = sample_release(schema, plan, result.arrays, rounds.get(1))
    release = release_cohort(cohort, settings.out_dir, schema=schema, plan=plan,
                             sites=strategy.sites,
                             contributors=strategy.contributors, engine=settings.engine)
    progress(f"released {len(cohort)} synthetic rows to {settings.out_dir}")
    _evaluate_release(grid, settings, release, progress)
    return release


def _evaluate_release(grid: Grid, settings: StudySettings, release: Release,
                      progress: ProgressFn) -> None:
    """Federated evaluation of the released cohort, or no report at all: a report
    left from an earlier study in this folder would describe another cohort."""
    for stale in (REPORT_NAME, REPORT_NAME.replace(".html", ".json")):
        (settings.out_dir / stale).unlink(missing_ok=True)
    if not settings.federated_evaluation:
        return
    cohort_csv = (release.directory / CSV_NAME).read_bytes()
    scores = evaluate_at_sites(grid, settings.schema, cohort_csv)
    if not scores:
        progress("federated evaluation: no site returned valid scores; no report written")
        return
    report = write_study_report(settings.out_dir, settings.schema, release.manifest, scores,
                                release.manifest["rows"])
    progress(f"federated evaluation: {len(scores)} sites scored the cohort; report {report}")


app = build_server_app()
