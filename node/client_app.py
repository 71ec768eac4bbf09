"""The node's Flower ClientApp: the front door of the hospital side.

On each training message it loads its own records, checks that the plan is
for its schema, trains the global generator locally with DP-SGD and replies
with the weights and the whitelisted scalars of `protocols.messages` — nothing
else. On an evaluation message (after the release) it scores the cohort
against its records and replies with the whitelisted scalar scores only. The steps already run are kept in the node's context state, so the
accountant covers every round of the study.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from node.site_config import resolve_site
from node.site_data import SiteData
from node.marginal_release import release_marginals
from node.site_evaluation import score_cohort
from node.training import SitePrivacy, train_round
from protocols import messages as keys
from protocols.errors import PlanError
from protocols.generator import build_generator
from protocols.plan import StudyPlan
from protocols.schema import Schema

log = logging.getLogger(__name__)
_STATE = "fedsynth-node"


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp whose run config is `overrides` on top of Flower's run config."""
    app = ClientApp()
    fixed = dict(overrides or {})

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, **fixed}
        return _train(msg, context, run_config)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        run_config = {**context.run_config, **fixed}
        return _evaluate(msg, context, run_config)

    return app


def _train(msg: Message, context: Context, run_config: Mapping[str, Any]) -> Message:
    torch.set_num_threads(1)
    plan_config = dict(msg.content[keys.PLAN])
    schema, site = resolve_site(context.node_config, run_config).load()
    if plan_config.get(keys.SCHEMA_SHA256) != schema.sha256:
        raise PlanError(f"Site {site.name} refuses the plan: it is for schema "
                        f"{plan_config.get(keys.SCHEMA_SHA256)}, but this site's schema is "
                        f"{schema.sha256}.")
    plan = StudyPlan.from_config(plan_config)
    state, privacy = _study_state(context, plan, schema.sha256, site)
    if plan.generator == "marginals":
        return _release(msg, context, state, schema, site, plan)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    model.load_state_dict(msg.content[keys.ARRAYS].to_torch_state_dict())
    outcome = train_round(model, site.encoded, plan, privacy, int(state[keys.STEPS_TOTAL]))
    state[keys.STEPS_TOTAL] = outcome.steps_total
    context.state.config_records[_STATE] = state
    log.info("site %s: round %s, %d steps, epsilon spent %.3f", site.name,
             plan_config.get(keys.SERVER_ROUND), outcome.steps, outcome.epsilon)
    reply = _reply_content(ArrayRecord(model.state_dict()), plan, site, outcome.steps,
                           outcome.steps_total, outcome.epsilon)
    return Message(content=reply, reply_to=msg)


def _release(msg: Message, context: Context, state: ConfigRecord, schema: Schema,
             site: SiteData, plan: StudyPlan) -> Message:
    """The marginals generator: the next of the two stages of the site's release."""
    received = {k: t.numpy() for k, t in msg.content[keys.ARRAYS].to_torch_state_dict().items()}
    release = release_marginals(schema, site, plan, int(state[keys.STEPS_TOTAL]), received)
    state[keys.STEPS_TOTAL] = release.stage
    context.state.config_records[_STATE] = state
    log.info("site %s: released stage %d of its tables, epsilon %.3f", site.name,
             release.stage, release.epsilon)
    arrays = {name: torch.from_numpy(table) for name, table in release.tables.items()}
    return Message(content=_reply_content(ArrayRecord(arrays), plan, site, 1, release.stage,
                                          release.epsilon), reply_to=msg)


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


def _study_state(context: Context, plan: StudyPlan, schema_sha256: str, site: SiteData
                 ) -> tuple[ConfigRecord, SitePrivacy]:
    """The node's record of this study: steps run so far and the DP parameters.

    The noise multiplier is fixed once, before the first round, and reused; a
    plan that changes mid-study is refused, since the noise was calibrated to
    the plan agreed at round 1.
    """
    fingerprint = plan.fingerprint(schema_sha256)
    state = context.state.config_records.get(_STATE)
    if state is None:
        # The marginals generator adds its noise in one release (node.marginal_release).
        privacy = (SitePrivacy.for_site(plan, site.n_records, site.name)
                   if plan.generator == "vae" else SitePrivacy(1.0, 0.0))
        state = ConfigRecord({keys.STEPS_TOTAL: 0, "plan": fingerprint,
                              "sample-rate": privacy.sample_rate,
                              "noise-multiplier": privacy.noise_multiplier})
        return state, privacy
    if state["plan"] != fingerprint:
        raise PlanError(f"Site {site.name} refuses the plan: it differs from the plan this "
                        "study started with, and the noise was calibrated to that one.")
    return state, SitePrivacy(float(state["sample-rate"]), float(state["noise-multiplier"]))


app = build_client_app()
