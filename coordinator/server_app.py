"""The coordinator's Flower ServerApp: the front door of the consortium side.

It wires the small modules together: the study settings from the run config,
the TLS check of a deployment's SuperLink (`transport`), a freshly initialised
generator or the last checkpoint of a study that stopped (`checkpoints`), the
rounds with FedAvg and reply checks (`rounds`, `strategy`) or with SecAgg+
(`secure_aggregation`), each site's privacy report (`privacy_reports`), the
release of the sampled cohort with its manifest, signed with the coordinator's
key (`cohort`, `signing_key`), and the federated evaluation of that cohort at
the sites when the plan budgets one (`federated_evaluation`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from coordinator.checkpoints import (Checkpoint, checkpoint_dir, clear_checkpoints,
                                     load_checkpoint, mark_released, resumable, save_checkpoint)
from coordinator.cohort import release_cohort
from coordinator.federated_evaluation import REPORT_NAME, evaluate_at_sites, write_study_report
from coordinator.ledger_heads import presented, read_known_heads, record_heads
from coordinator.privacy_reports import collect_privacy_reports
from coordinator.provisioning.signing_key import signing_key
from coordinator.rounds import run_rounds
from coordinator.secure_aggregation import secure_rounds
from coordinator.strategy import StudyStrategy
from coordinator.study import StudySettings
from coordinator.transport import verify_tls
from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.records import check_file
from protocols.release.manifest import CSV_NAME, MANIFEST_NAME, Release, StudyRun
from protocols.schema import Schema

# Under `flwr run` only Flower's own logger reaches the operator's console.
_FLOWER_LOG = logging.getLogger("flwr")
ProgressFn = Callable[[str], None]
NODE_KEY = "node:"  # a SecAgg+ contribution before the node's name is known


def build_server_app(overrides: Mapping[str, Any] | None = None,
                     progress: ProgressFn | None = None,
                     outcome: dict[str, Any] | None = None,
                     schema: Schema | None = None) -> ServerApp:
    """A ServerApp whose run config is `overrides` on top of Flower's run config.

    `schema`: the study's schema, already parsed by a caller that validated it (the
    simulation harness); without it, the run config's `schema-path` is read.

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
            settings = StudySettings.from_run_config({**context.run_config, **fixed}, schema)
            outcome["release"] = run_study(grid, settings, progress or _FLOWER_LOG.info,
                                           context)
        except Exception as exc:
            outcome["error"] = exc
            if isinstance(exc, FedsynthError):  # the operator's paragraph, before Flower's trace
                _FLOWER_LOG.error("fedsynth: the study stopped: %s", exc)
            raise

    return app


def run_study(grid: Grid, settings: StudySettings, progress: ProgressFn,
              context: Context) -> Release:
    """Run every round of the study on `grid` (resuming from the last checkpoint of
    the same study if one stopped early), then release the cohort. The signing key
    is loaded first, so a bad key stops the study before any site spends budget."""
    schema, plan = settings.schema, settings.plan
    signer = signing_key(settings.signing_key)
    if signer.created:
        progress(f"generated this coordinator's manifest-signing key {signer.path}")
    if settings.engine == "deployment":
        verify_tls(settings.superlink_address, settings.root_certificates)
    family = family_for(plan)
    initial = initial_arrays(schema, plan)
    resumed = resumable(settings.out_dir, plan, schema.sha256)
    if resumed is None:
        clear_checkpoints(settings.out_dir)
        plan = plan.issued()  # a new study: an id of its own, whatever other studies ran
    else:
        plan = replace(plan, study_nonce=resumed.study_nonce)  # the same study, same id
        progress(f"resuming the study after round {resumed.round}/{plan.rounds} "
                 f"(checkpoint in {checkpoint_dir(settings.out_dir)})")
    settings = replace(settings, plan=plan)
    study = plan.fingerprint(schema.sha256)
    strategy = StudyStrategy(plan, initial, settings.round_timeout,
                             sites=resumed.sites if resumed else None,
                             contributions=resumed.contributions if resumed else None)
    started = time.monotonic()

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        save_checkpoint(settings.out_dir, study, Checkpoint(
            server_round, arrays, strategy.sites, strategy.contributions, plan.study_nonce))
        summary = _round_summary(strategy, server_round)
        progress(f"round {server_round}/{plan.rounds}: {summary}, "
                 f"{time.monotonic() - started:.1f} s")

    first = resumed.round + 1 if resumed else 1
    arrays = _train(grid, context, settings, strategy, resumed.arrays if resumed else initial,
                    first, after_round)
    cohort = family.sample(schema, plan, _numpy(arrays),
                           lambda r: _numpy(load_checkpoint(settings.out_dir, r).arrays))
    release = release_cohort(cohort, settings.out_dir, schema=schema, plan=plan,
                             sites=strategy.sites, contributions=strategy.contributions,
                             engine=settings.engine, signing_key=signer.key,
                             tls=settings.engine == "deployment",
                             run=_flower_run(grid, context))
    record_heads(settings.ledger_heads, release.manifest["ledger_heads"])
    mark_released(settings.out_dir, study)
    progress(f"released {len(cohort)} synthetic rows to {settings.out_dir}")
    _evaluate_release(grid, settings, release, progress)
    return release


def _train(grid: Grid, context: Context, settings: StudySettings, strategy: StudyStrategy,
           arrays: ArrayRecord, first: int, after_round: Callable[[int, ArrayRecord], None]
           ) -> ArrayRecord:
    """Rounds `first`..`plan.rounds` (none if a stopped study had finished them all)."""
    plan = settings.plan
    # Each site's last ledger head this coordinator saw: a node whose ledger lost it refuses.
    plan_record = ConfigRecord({**plan.to_config(), keys.SCHEMA_SHA256: settings.schema.sha256,
                                **presented(read_known_heads(settings.ledger_heads))})
    if not plan.secure_aggregation:
        return run_rounds(grid, strategy, arrays, plan_record, first, plan.rounds,
                          settings.round_timeout, after_round)

    def after_secure_round(server_round: int, average: ArrayRecord, nodes: list[int]) -> None:
        for node in nodes:  # names are known only from the reports after training
            strategy.contributions.setdefault(f"{NODE_KEY}{node}", []).append(server_round)
        after_round(server_round, average)

    if first <= plan.rounds:
        arrays = secure_rounds(grid, context, plan_record=plan_record, initial=arrays,
                               first_round=first, last_round=plan.rounds,
                               min_sites=plan.min_sites, after_round=after_secure_round,
                               timeout=settings.round_timeout)
    # The coordinator saw only sums: each site reports what it spent, from its ledger.
    strategy.sites, names = collect_privacy_reports(grid, plan_record, plan,
                                                    settings.round_timeout)
    strategy.contributions = {_site_name(key, names): rounds
                              for key, rounds in strategy.contributions.items()}
    return arrays


def _flower_run(grid: Grid, context: Context) -> StudyRun:
    """This run's id and the sha256 of the bundle it shipped, as Flower recorded them
    (Flower's simulation engine runs no bundle: its run has no hash)."""
    return StudyRun(run_id=context.run_id, app_sha256=grid.run.fab_hash or None)


def _site_name(key: str, names: Mapping[int, str]) -> str:
    node = int(key.removeprefix(NODE_KEY))
    return names.get(node, f"node {node} (sent no privacy report)")


def _round_summary(strategy: StudyStrategy, server_round: int) -> str:
    plan = strategy.plan
    if plan.secure_aggregation:
        return "updates combined by SecAgg+ (each site reports its epsilon after training)"
    spent = max(s.epsilon for s in strategy.sites.values())
    sites = sum(server_round in r for r in strategy.contributions.values())
    return f"{sites} sites, max epsilon spent {spent:.4f} of {plan.epsilon:g}"


def _evaluate_release(grid: Grid, settings: StudySettings, release: Release,
                      progress: ProgressFn) -> None:
    """Federated evaluation of the released cohort when the plan budgets one, or no
    report at all: a report left from an earlier study in this folder would describe
    another cohort."""
    for stale in (REPORT_NAME, REPORT_NAME.replace(".html", ".json")):
        (settings.out_dir / stale).unlink(missing_ok=True)
    if not settings.plan.evaluated:
        return
    cohort_path = release.directory / CSV_NAME
    tables = evaluate_at_sites(grid, settings.schema, settings.plan, cohort_path.read_bytes(),
                               (release.directory / MANIFEST_NAME).read_bytes(),
                               timeout=settings.round_timeout)
    if not tables:
        progress("federated evaluation: no site released its tables; no report written")
        return
    cohort = check_file(cohort_path, settings.schema).parsed
    report = write_study_report(settings.out_dir, settings.schema, settings.plan,
                                release.manifest, tables, cohort)
    progress(f"federated evaluation: {len(tables)} sites released noisy tables of their "
             f"records (epsilon {settings.plan.evaluation_epsilon:g}, charged once); "
             f"report {report}")


app = build_server_app()


def initial_arrays(schema: Schema, plan: StudyPlan) -> ArrayRecord:
    """The global arrays a fresh study starts from, as the plan's family defines them."""
    return ArrayRecord(torch_state_dict={
        name: torch.from_numpy(value)
        for name, value in family_for(plan).global_arrays(schema, plan).items()})


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}
