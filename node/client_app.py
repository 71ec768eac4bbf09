"""The node's Flower ClientApp: the front door of the hospital side.

On each training message it checks, from public inputs only, that the plan is
for its schema and within the hospital's caps on one study (`study_caps`, before
anything of the plan is allocated), and that the global model is the plan's
(names, shapes, dtypes, finite values); then its privacy ledger
(`round_charging`) refuses a ledger that was rolled back (one that no longer holds
the head kept outside it, or the head the coordinator last saw: `ledger.anchor`)
and a study that would overspend the site's ε or δ budget, and reserves the
plan's before any step; only then are the site's records read, the global generator
trained locally with DP-SGD (or the marginal tables released), and the reply
sent: the weights, the whitelisted scalars of `protocols.messages` and the
ledger's new head, nothing else. Each round is charged once before its answer
leaves; the steps already run carry over, so the accountant covers every round
of the study, across coordinator restarts too.

Whatever the reason, a refusal reaches the coordinator as the one text
`protocols.messages.DECLINED`; the reason goes to the node's log. No check
that depends on the records decides an answer: the noise and the ε reported
follow from the plan, and a site's size is checked only on the operator's side
(`fedsynth-node start`, the simulation harness), never as an answer a
coordinator could probe.

On an evaluation message it releases, once per study and charged, the noisy
evaluation tables of the study's own signed cohort (`site_evaluation`). On a
query (after a secure-aggregation study) it reports the ε, steps and rounds its
own ledger records for the study.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from node.global_model import check_global_arrays
from node.ledger.anchor import LedgerAnchor, check_anchor, presented_head
from node.ledger.privacy_ledger import PrivacyLedger
from node.ledger.round_charging import RoundRequest, answer_round
from node.ledger.round_replay import StoredAnswer, model_sha256
from node.secure_aggregation import is_secure_message, secure_train
from node.site_config import FEDERATED_EVALUATION, SiteSource, resolve_site
from node.site_data import SiteData
from node.site_evaluation import evaluation_release
from node.study_caps import refuse_beyond_caps, refuse_cohort_beyond_cap
from protocols import messages as keys
from protocols.config import read_flag
from protocols.errors import FedsynthError, PlanError
from protocols.generators import family_for
from protocols.generators.family import SitePrivacy
from protocols.plan import StudyPlan, check_issued
from protocols.privacy.ledger import last_hash, study_rounds, study_spend
from protocols.schema import Schema

log = logging.getLogger(__name__)


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is `overrides` on top of Flower's run config.

    A simulated node reads its own file, as a deployed node does: it never takes its
    records from the harness (and Flower's Ray backend ships the app's closure with
    every message, so records held in it would travel to every node every round)."""
    app = ClientApp()
    fixed = dict(overrides or {})

    def site(context: Context) -> SiteSource:
        return resolve_site(context.node_config, {**context.run_config, **fixed})

    @app.train()
    @_without_details
    def train(msg: Message, context: Context) -> Message:
        source = site(context)
        if is_secure_message(msg):
            return secure_train(msg, context,
                                lambda content: train_reply(content, context, source))
        if StudyPlan.from_config(dict(msg.content[keys.PLAN])).secure_aggregation:
            raise PlanError("The plan promises secure aggregation, but this update was "
                            "requested in the clear; the node refuses to send it.")
        return Message(content=train_reply(msg.content, context, source), reply_to=msg)

    @app.evaluate()
    @_without_details
    def evaluate(msg: Message, context: Context) -> Message:
        return _evaluate(msg, context, site(context))

    @app.query()
    @_without_details
    def query(msg: Message, context: Context) -> Message:
        return _privacy_report(msg, context, site(context))

    return app


class SiteRefusal(FedsynthError):
    """What the coordinator learns when a site declines: always the same text."""


def _without_details(handler: Callable[[Message, Context], Message]
                     ) -> Callable[[Message, Context], Message]:
    """Flower sends an exception's text back to the coordinator. A refusal's own text
    names the site's budget, a record's value or why the ledger refuses, and which kind
    of refusal it was would itself tell a probing coordinator something; a bug's text
    (pandas, torch, Opacus) may quote data. So every refusal leaves as the one text
    `DECLINED`, and the reason stays in the node's log with the traceback."""
    @functools.wraps(handler)
    def guarded(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except FedsynthError as exc:
            log.error("fedsynth-node declined: %s", exc)
        except Exception:  # noqa: BLE001 - a bug's text may quote a record: it stays here
            log.exception("fedsynth-node failed")
        raise SiteRefusal(keys.DECLINED) from None
    return guarded


def train_reply(content: RecordDict, context: Context, source: SiteSource) -> RecordDict:
    """This site's answer to one training round: weights (or tables) and the
    whitelisted scalars, charged on the site's privacy ledger at most once."""
    torch.set_num_threads(1)
    plan_config = dict(content[keys.PLAN])
    schema = source.load_schema()
    source.refuse_a_cohort()
    plan = _plan_for(schema, plan_config, "train")
    refuse_beyond_caps(plan, schema, source.caps, source.site_name)
    anchor = LedgerAnchor(_head_file(source), presented_head(plan_config, source.site_name))
    received = content[keys.ARRAYS]
    check_global_arrays(received, schema, plan, source.site_name)
    request = RoundRequest(site=source.site_name, plan=plan, schema_sha256=schema.sha256,
                           round=int(plan_config.get(keys.SERVER_ROUND, 0)),
                           model_sha256=model_sha256(received))

    family = family_for(plan)

    def refuse_a_late_first_release() -> None:
        problem = family.join_problem(plan, request.round)
        if problem:
            raise PlanError(f"Site {source.site_name} refuses to join the {plan.generator} "
                            f"study in round {request.round}: {problem}.")

    def new_study_privacy() -> SitePrivacy:
        refuse_a_late_first_release()
        return family.site_privacy(plan, schema)

    def train(privacy: SitePrivacy, released_before: int) -> StoredAnswer:
        if released_before == 0:
            # A study reserved earlier whose first round never completed: its first release
            # would come late all the same (under SecAgg+ a late stage-1 table among echoes
            # would leave the secure sum with this site's share of the noise only).
            refuse_a_late_first_release()
        _, site = source.load()  # the records are read only once the ledger has reserved
        _note_small_site(plan, site)
        release = family.release(schema, site, plan, privacy, released_before,
                                 {k: t.numpy() for k, t in received.items()})
        log.info("site %s: answered round %d (%d released in the study), epsilon spent %.3f",
                 site.name, request.round, release.steps_total, release.epsilon)
        return StoredAnswer(round=request.round, model_sha256=request.model_sha256,
                            arrays=dict(release.arrays),
                            metrics={keys.STEPS: release.steps,
                                     keys.STEPS_TOTAL: release.steps_total,
                                     keys.EPSILON_SPENT: release.epsilon})

    answer, head = answer_round(_state_dir(source, context), source.budget, request,
                                new_study_privacy, train, anchor)
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in answer.arrays.items()})
    return _reply_content(arrays, source, int(answer.metrics[keys.STEPS]),
                          int(answer.metrics[keys.STEPS_TOTAL]),
                          float(answer.metrics[keys.EPSILON_SPENT]), head)


def _plan_for(schema: Schema, plan_config: Mapping[str, Any], what: str) -> StudyPlan:
    """The plan of a message, refused when it is for another schema or names no study
    (no nonce: its id could be another study's)."""
    if plan_config.get(keys.SCHEMA_SHA256) != schema.sha256:
        raise PlanError(f"The node refuses to {what}: the plan is for schema "
                        f"{plan_config.get(keys.SCHEMA_SHA256)}, but this site's schema is "
                        f"{schema.sha256}.")
    plan = StudyPlan.from_config(dict(plan_config))
    check_issued(plan)
    return plan


def _note_small_site(plan: StudyPlan, site: SiteData) -> None:
    """Tell the operator (only) when the site is smaller than the plan is meant for: its
    release is as private as any other, but carries mostly noise."""
    smallest = family_for(plan).minimum_site_records(plan)
    if plan.private and site.n_records < smallest:
        log.warning("site %s has %d records; this plan is meant for sites of at least %d, so "
                    "its update carries mostly noise (it is sent all the same: declining "
                    "would tell the coordinator the site's size)", site.name,
                    site.n_records, smallest)


def _privacy_report(msg: Message, context: Context, source: SiteSource) -> Message:
    """This site's ε, steps and rounds answered in the study, from its own ledger (refused
    when the ledger lost the head kept outside it), with the ledger's head."""
    schema = source.load_schema()
    study = _plan_for(schema, msg.content[keys.PLAN], "report").fingerprint(schema.sha256)
    ledger = PrivacyLedger(_state_dir(source, context))
    entries = ledger.entries()
    check_anchor(entries, LedgerAnchor(_head_file(source)), ledger.path)  # not a rolled-back one
    spend = study_spend(entries, study)
    if spend is None:
        raise PlanError(f"Site {source.site_name} has no record of this study in its ledger.")
    report = MetricRecord({keys.EPSILON_SPENT: spend.spent, keys.STEPS_TOTAL: spend.steps_total,
                           keys.ROUNDS: study_rounds(entries, study),
                           keys.SYNTHETIC_INPUT: _synthetic_input(source)})
    site = _site_record(source, last_hash(entries))
    return Message(content=RecordDict({keys.REPORT: report, keys.SITE: site}), reply_to=msg)


def _state_dir(source: SiteSource, context: Context) -> Path:
    """Where this node keeps its ledger: the node's own folder when deployed; in a
    simulation without one, a temporary folder of the run."""
    if source.state_dir:
        return Path(source.state_dir)
    node = context.node_config.get("partition-id", context.node_id)
    return Path(tempfile.gettempdir()) / "fedsynth-simulation" / f"run-{context.run_id}" / \
        f"node-{node}"


def _head_file(source: SiteSource) -> Path | None:
    return Path(source.ledger_head_file) if source.ledger_head_file else None


def _reply_content(arrays: ArrayRecord, source: SiteSource, steps: int, steps_total: int,
                   epsilon: float, head: str) -> RecordDict:
    """Weights (or tables), the whitelisted scalars and the ledger's head: all a training
    reply holds."""
    return RecordDict({
        keys.ARRAYS: arrays,
        keys.METRICS: MetricRecord({
            keys.WEIGHT: keys.FEDAVG_WEIGHT,
            keys.STEPS: steps,
            keys.STEPS_TOTAL: steps_total,
            keys.EPSILON_SPENT: epsilon,
            keys.SYNTHETIC_INPUT: _synthetic_input(source),
        }),
        keys.SITE: _site_record(source, head),
    })


def _synthetic_input(source: SiteSource) -> float:
    """1.0 when the operator let the node train on a file marked as a fedsynth cohort."""
    return float(source.load()[1].synthetic)


def _site_record(source: SiteSource, head: str | None = None) -> ConfigRecord:
    """The site's name, and its ledger's head where the reply follows a charge the
    coordinator records (a training reply, a privacy report)."""
    if head is None:
        return ConfigRecord({keys.SITE_NAME: source.site_name})
    return ConfigRecord({keys.SITE_NAME: source.site_name, keys.LEDGER_HEAD: head})


def _evaluate(msg: Message, context: Context, source: SiteSource) -> Message:
    """Release this site's noisy evaluation tables of the study's signed cohort, once.

    A hospital that does not want to take part sets `federated-evaluation = false`
    in its node config and the node declines."""
    torch.set_num_threads(1)
    if not read_flag(context.node_config.get(FEDERATED_EVALUATION, True),
                     f"The node config's {FEDERATED_EVALUATION}"):
        raise PlanError(f"Site {source.site_name} declines federated evaluation (node config).")
    schema = source.load_schema()
    plan = _plan_for(schema, msg.content[keys.PLAN], "evaluate")
    cohort = msg.content[keys.COHORT]
    cohort_csv = bytes(cohort[keys.COHORT_CSV])
    refuse_cohort_beyond_cap(cohort_csv, plan, source.caps, source.site_name)
    tables = evaluation_release(source, _state_dir(source, context), schema, plan,
                                cohort_csv, bytes(cohort[keys.COHORT_MANIFEST]),
                                LedgerAnchor(_head_file(source)))
    log.info("site %s: released its evaluation tables of the study's cohort",
             source.site_name)
    reply = RecordDict({keys.EVALUATION_TABLES: ArrayRecord(
                            {name: torch.from_numpy(t) for name, t in tables.items()}),
                        keys.SITE: _site_record(source)})
    return Message(content=reply, reply_to=msg)


app = build_client_app()
