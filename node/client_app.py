"""The node's Flower ClientApp: the front door of the hospital side.

On each training message it loads its own records, checks that the plan is
for its schema and that the global model is the plan's (names, shapes,
dtypes, finite values), trains the global generator locally with DP-SGD and
replies with the weights and the whitelisted scalars of `protocols.messages`
— nothing else. Every round goes through the site's privacy ledger (`round_charging`):
a new study is refused if it would overspend the site's budget, each round is
charged once before its answer leaves, and the steps already run carry over
so the accountant covers every round of the study, across coordinator
restarts too. On an evaluation message (after the release) it scores the
cohort against its records and replies with the whitelisted scalars only.
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
from node.privacy_ledger import PrivacyLedger
from node.round_charging import RoundRequest, answer_round
from node.round_replay import StoredAnswer, model_sha256
from node.secure_aggregation import is_secure_message, secure_train
from node.site_config import SiteSource, resolve_site
from node.site_data import SiteData
from node.marginal_release import release_marginals
from node.site_evaluation import score_cohort
from node.training import SitePrivacy, train_round
from protocols import messages as keys
from protocols.errors import BudgetError, FedsynthError, PlanError, RecordError
from protocols.generator import build_generator
from protocols.ledger import study_rounds, study_spend
from protocols.plan import StudyPlan
from protocols.schema import Schema

log = logging.getLogger(__name__)


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is `overrides` on top of Flower's run config."""
    app = ClientApp()
    fixed = dict(overrides or {})

    @app.train()
    @_without_details
    def train(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, **fixed}
        if is_secure_message(msg):
            return secure_train(msg, context,
                                lambda content: train_reply(content, context, run_config))
        if StudyPlan.from_config(dict(msg.content[keys.PLAN])).secure_aggregation:
            raise PlanError("The plan promises secure aggregation, but this update was "
                            "requested in the clear; the node refuses to send it.")
        return _train(msg, context, run_config)

    @app.evaluate()
    @_without_details
    def evaluate(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, **fixed}
        return _evaluate(msg, context, run_config)

    @app.query()
    @_without_details
    def query(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, **fixed}
        return _privacy_report(msg, context, run_config)

    return app


class SiteRefusal(FedsynthError):
    """What the coordinator learns when a site refuses: the kind of refusal, no detail."""


_REFUSALS = {
    RecordError: "the site's records do not pass the schema check",
    BudgetError: "the site's privacy ledger refuses the round (budget, a round already "
                 "charged, or a ledger an operator must look at)",
    PlanError: "the site refuses the plan (another schema, a plan its records cannot "
               "support, or a setting it declines)",
}


def _without_details(handler: Callable[[Message, Context], Message]
                     ) -> Callable[[Message, Context], Message]:
    """Flower sends an exception's text back to the coordinator; a refusal's own text
    may name a record's value, the site's size or its budget, and a bug's (pandas,
    torch, Opacus) may quote data too. It stays in the node's log with the traceback,
    and the coordinator gets only the kind of refusal."""
    @functools.wraps(handler)
    def guarded(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except FedsynthError as exc:
            log.error("fedsynth-node refused: %s", exc)
            kind = next((text for cls, text in _REFUSALS.items() if isinstance(exc, cls)),
                        "the site's node is misconfigured")
            raise SiteRefusal(f"{kind}; the site's node log says why.") from None
        except Exception:  # noqa: BLE001 - a bug's text may quote a record: it stays here
            log.exception("fedsynth-node failed")
            raise SiteRefusal("the site's node failed unexpectedly; the site's node log "
                              "says why.") from None
    return guarded


def _train(msg: Message, context: Context, run_config: Mapping[str, Any]) -> Message:
    return Message(content=train_reply(msg.content, context, run_config), reply_to=msg)


def train_reply(content: RecordDict, context: Context, run_config: Mapping[str, Any]
                ) -> RecordDict:
    """This site's answer to one training round: weights (or tables) and the
    whitelisted scalars, charged on the site's privacy ledger at most once."""
    torch.set_num_threads(1)
    plan_config = dict(content[keys.PLAN])
    source = resolve_site(context.node_config, run_config)
    schema, site = source.load()
    if plan_config.get(keys.SCHEMA_SHA256) != schema.sha256:
        raise PlanError(f"Site {site.name} refuses the plan: it is for schema "
                        f"{plan_config.get(keys.SCHEMA_SHA256)}, but this site's schema is "
                        f"{schema.sha256}.")
    plan = StudyPlan.from_config(plan_config)
    received = content[keys.ARRAYS]
    check_global_arrays(received, schema, plan, site.name)
    request = RoundRequest(site=site.name, plan=plan, schema_sha256=schema.sha256,
                           round=int(plan_config.get(keys.SERVER_ROUND, 0)),
                           model_sha256=model_sha256(received))

    def new_study_privacy() -> SitePrivacy:
        privacy = SitePrivacy.for_site(plan, site.n_records, site.name)
        if plan.generator == "marginals" and request.round > 1:
            raise PlanError(f"Site {site.name} refuses to join the marginals study in "
                            f"round {request.round}: its release comes in two stages "
                            "from round 1, and a late one would spend budget on tables "
                            "the coordinator cannot use.")
        return privacy

    def train(privacy: SitePrivacy, steps_before: int) -> StoredAnswer:
        if plan.generator == "marginals":
            return _release(schema, site, plan, steps_before, received, request)
        return _train_generator(site, plan, privacy, steps_before, received, request)

    answer = answer_round(_state_dir(source, context), source.epsilon_budget, request,
                          new_study_privacy, train)
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in answer.arrays.items()})
    return _reply_content(arrays, plan, site, int(answer.metrics[keys.STEPS]),
                          int(answer.metrics[keys.STEPS_TOTAL]),
                          float(answer.metrics[keys.EPSILON_SPENT]))


def _train_generator(site: SiteData, plan: StudyPlan, privacy: SitePrivacy, steps_before: int,
                     received: ArrayRecord, request: RoundRequest) -> StoredAnswer:
    """One round of DP-SGD on the global generator."""
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    model.load_state_dict(received.to_torch_state_dict())
    outcome = train_round(model, site.encoded, plan, privacy, steps_before)
    log.info("site %s: round %d, %d steps, epsilon spent %.3f", site.name, request.round,
             outcome.steps, outcome.epsilon)
    return _answer(request, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                   outcome.steps, outcome.steps_total, outcome.epsilon)


def _release(schema: Schema, site: SiteData, plan: StudyPlan, released_before: int,
             received: ArrayRecord, request: RoundRequest) -> StoredAnswer:
    """The marginals generator: the next of the two stages of the site's release."""
    tables = {k: t.numpy() for k, t in received.to_torch_state_dict().items()}
    release = release_marginals(schema, site, plan, released_before, tables)
    log.info("site %s: released stage %d of its tables, epsilon %.3f", site.name,
             release.stage, release.epsilon)
    return _answer(request, release.tables, 1, release.stage, release.epsilon)


def _answer(request: RoundRequest, arrays: Mapping[str, Any], steps: int, steps_total: int,
            epsilon: float) -> StoredAnswer:
    return StoredAnswer(round=request.round, model_sha256=request.model_sha256,
                        arrays=dict(arrays),
                        metrics={keys.STEPS: steps, keys.STEPS_TOTAL: steps_total,
                                 keys.EPSILON_SPENT: epsilon})


def _privacy_report(msg: Message, context: Context, run_config: Mapping[str, Any]) -> Message:
    """This site's ε, steps and rounds answered in the study, from its own ledger."""
    plan_config = dict(msg.content[keys.PLAN])
    source = resolve_site(context.node_config, run_config)
    schema, site = source.load()
    study = StudyPlan.from_config(plan_config).fingerprint(schema.sha256)
    entries = PrivacyLedger(_state_dir(source, context)).entries()
    spend = study_spend(entries, study)
    if spend is None:
        raise PlanError(f"Site {site.name} has no record of this study in its ledger.")
    report = MetricRecord({keys.EPSILON_SPENT: spend.spent, keys.STEPS_TOTAL: spend.steps_total,
                           keys.ROUNDS: study_rounds(entries, study),
                           keys.SYNTHETIC_INPUT: float(site.synthetic)})
    return Message(content=RecordDict({keys.REPORT: report,
                                       keys.SITE: ConfigRecord({keys.SITE_NAME: site.name})}),
                   reply_to=msg)


def _state_dir(source: SiteSource, context: Context) -> Path:
    """Where this node keeps its ledger: the node's own folder when deployed; in a
    simulation without one, a temporary folder of the run."""
    if source.state_dir:
        return Path(source.state_dir)
    node = context.node_config.get("partition-id", context.node_id)
    return Path(tempfile.gettempdir()) / "fedsynth-simulation" / f"run-{context.run_id}" / \
        f"node-{node}"


def _reply_content(arrays: ArrayRecord, plan: StudyPlan, site: SiteData, steps: int,
                   steps_total: int, epsilon: float) -> RecordDict:
    """Weights (or tables) and the whitelisted scalars: all a training reply holds."""
    return RecordDict({
        keys.ARRAYS: arrays,
        keys.METRICS: MetricRecord({
            keys.WEIGHT: plan.fedavg_weight(site.n_records),
            keys.STEPS: steps,
            keys.STEPS_TOTAL: steps_total,
            keys.EPSILON_SPENT: epsilon,
            keys.SYNTHETIC_INPUT: float(site.synthetic),
        }),
        keys.SITE: ConfigRecord({keys.SITE_NAME: site.name}),
    })


def _evaluate(msg: Message, context: Context, run_config: Mapping[str, Any]) -> Message:
    """Score the released cohort against this site's records; reply with scalars only.

    A hospital that does not want to return scores sets `federated-evaluation =
    false` in its node config and the node declines."""
    torch.set_num_threads(1)
    schema, site = resolve_site(context.node_config, run_config).load()
    if str(context.node_config.get("federated-evaluation", "true")).lower() == "false":
        raise PlanError(f"Site {site.name} declines federated evaluation (node config).")
    config = msg.content[keys.PLAN]
    if config.get(keys.SCHEMA_SHA256) != schema.sha256:
        raise PlanError(f"Site {site.name} refuses to score a cohort of schema "
                        f"{config.get(keys.SCHEMA_SHA256)}; its schema is {schema.sha256}.")
    scores = score_cohort(schema, site, bytes(msg.content[keys.COHORT][keys.COHORT_CSV]))
    log.info("site %s: scored the released cohort", site.name)
    reply = RecordDict({keys.SCORES: MetricRecord(scores),
                        keys.SITE: ConfigRecord({keys.SITE_NAME: site.name})})
    return Message(content=reply, reply_to=msg)


app = build_client_app()
