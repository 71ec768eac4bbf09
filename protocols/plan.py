"""The study plan: what every site agrees to before round 1.

The plan fixes the privacy target (ε, δ per site over the whole study), the
training schedule, the generator's size and the cohort to release. It travels
with every training message as a flat `ConfigRecord`, together with the schema
hash, so a node can check that it is training the study it agreed to.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from protocols.config import read_flag, read_number, read_whole_number
from protocols.errors import PlanError
from protocols.privacy.site_limits import MAX_SITE_RECORDS


@dataclass(frozen=True)
class StudyPlan:
    """Study-wide settings. `epsilon=inf` trains the same generator without DP.

    The field defaults are the library's (a VAE plan, which callers build on); what a
    user gets by default (family, rounds, SecAgg+ by site count) is
    `protocols.plan_defaults.default_plan`.

    Everything that decides how much noise a site adds, and therefore the ε it
    reports, follows from these fields alone, never from a site's records: in
    DP-SGD every record is used in a step with probability `sample_rate` at every
    site (not batch / n, which would make σ and ε functions of n), and every
    site's FedAvg weight is 1, so no site size leaves a node.

    `epsilon` is each site's ε over the whole study, federated evaluation
    included: `evaluation_epsilon` > 0 asks each site, once, for noisy counts
    that score the released cohort (an evaluation release that alone would be
    `evaluation_epsilon`-DP), and the training noise is calibrated so that both
    together, composed in Rényi DP, stay within `epsilon`. 0 (default): no
    federated evaluation.

    `secure_aggregation`: the sites' updates are combined with Flower's SecAgg+,
    so the coordinator only ever holds their sum (and never a site's own ε
    report, which the sites send separately after training). `colluders`: how
    many sites may side with the coordinator; a family whose sites add shares of
    one central noise (`GeneratorFamily.exposed_epsilon`) sizes the shares so that
    the `min_sites - colluders` honest sites' shares alone carry it.

    `study_nonce`: 128 random bits (32 hex digits) the coordinator draws when a study
    starts (`issued`) and keeps when it resumes, so that the study's id (`fingerprint`)
    is its own: two consortia, or one re-running an identical plan against the same
    sites, start two studies, each charged on its own. Empty in a plan as a user writes
    it; a node takes part only in an issued plan (`check_issued`).
    """

    epsilon: float = 3.0
    delta: float = 1e-5
    rounds: int = 15
    local_steps: int = 20
    sample_rate: float = 0.25
    learning_rate: float = 2e-2
    max_grad_norm: float = 1.0
    hidden: int = 32
    latent: int = 4
    rows: int = 1000
    seed: int = 0
    min_sites: int = 2
    generator: str = "vae"  # a family of protocols.generators, which checks its own rules
    secure_aggregation: bool = False
    evaluation_epsilon: float = 0.0
    colluders: int = 0
    study_nonce: str = ""

    def __post_init__(self) -> None:
        # One type per field, however the plan was built (3 and 3.0 are one epsilon): the
        # plan's fingerprint, which names the study on both sides, depends on it.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, float) and isinstance(value, int) \
                    and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        check_plan(self)

    @property
    def private(self) -> bool:
        return math.isfinite(self.epsilon)

    @property
    def total_steps(self) -> int:
        """DP-SGD steps each site runs over the whole study (all rounds)."""
        return self.rounds * self.local_steps

    @property
    def evaluated(self) -> bool:
        """Whether the sites score the released cohort (a DP release of its own)."""
        return self.evaluation_epsilon > 0

    def fingerprint(self, schema_sha256: str) -> str:
        """SHA-256 of this plan with its schema: what a node agreed to at round 1, and
        the study's id on both sides (an issued plan's nonce makes it the study's own)."""
        text = json.dumps({**self.to_config(), "schema": schema_sha256}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_config(self) -> dict[str, Any]:
        """Flat dash-keyed values, as carried in a Flower ConfigRecord."""
        return {name.replace("_", "-"): value for name, value in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StudyPlan:
        """Build a plan from dash- or underscore-keyed values, ignoring other keys."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in config.items():
            name = str(key).replace("-", "_")
            if name in known:
                values[name] = _coerce(name, value, cls.__dataclass_fields__[name].default)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> StudyPlan:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def issued(self) -> StudyPlan:
        """This plan as a coordinator starts a new study of it: with a fresh nonce."""
        return replace(self, study_nonce=secrets.token_hex(NONCE_BYTES))


NONCE_BYTES = 16
_NONCE = re.compile(rf"[0-9a-f]{{{2 * NONCE_BYTES}}}")


def check_issued(plan: StudyPlan) -> None:
    """Refuse a plan that names no study (no `study-nonce`): a node takes part only in a
    study a coordinator started, whose id no other study shares."""
    if not plan.study_nonce:
        raise PlanError(f"Study plan is invalid: study-nonce is missing; the coordinator "
                        f"draws one when it starts a study (plan: {plan.to_config()}).")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`value` read as the kind of `name`'s default, by the one parser of that kind."""
    what = f"Study plan: {name.replace('_', '-')}"
    if isinstance(default, str):
        return str(value).strip()
    if isinstance(default, bool):
        return read_flag(value, what, PlanError)
    if isinstance(default, int):
        return read_whole_number(value, what, PlanError)
    return read_number(value, what, PlanError)


def check_plan(plan: StudyPlan) -> None:
    """Refuse a plan that cannot give a meaningful study."""
    rules = [
        (plan.epsilon > 0, "epsilon must be positive (or inf for the non-private reference)"),
        (0 < plan.delta < 1, "delta must lie strictly between 0 and 1"),
        (plan.rounds >= 1, "rounds must be at least 1"),
        (plan.local_steps >= 1, "local-steps must be at least 1"),
        (0 < plan.sample_rate <= 1, "sample-rate must lie in (0, 1]"),
        (0 < plan.learning_rate < math.inf, "learning-rate must be positive and finite"),
        (0 < plan.max_grad_norm < math.inf, "max-grad-norm must be positive and finite"),
        (plan.hidden >= 4 and plan.latent >= 1, "hidden must be >= 4 and latent >= 1"),
        (plan.rows >= 1, "rows must be at least 1"),
        (plan.min_sites >= 1, "min-sites must be at least 1"),
        (0 <= plan.colluders < plan.min_sites,
         "colluders must be at least 0 and fewer than min-sites (every secure sum needs an "
         "honest site)"),
        (not plan.private or plan.delta * MAX_SITE_RECORDS < 1,
         f"delta must be below 1/{MAX_SITE_RECORDS} (the largest site fedsynth accepts), so "
         "that a failure of probability delta cannot amount to releasing a record"),
        (0 <= plan.evaluation_epsilon < math.inf,
         "evaluation-epsilon must be 0 (no federated evaluation) or a positive number"),
        (not plan.private or plan.evaluation_epsilon < plan.epsilon,
         "evaluation-epsilon is part of epsilon and must be smaller than it"),
        (not plan.study_nonce or _NONCE.fullmatch(plan.study_nonce) is not None,
         f"study-nonce must be {2 * NONCE_BYTES} lowercase hexadecimal digits (the random "
         "id the coordinator draws when it starts a study)"),
    ]
    for holds, rule in rules:
        if not holds:
            raise PlanError(f"Study plan is invalid: {rule} (plan: {plan.to_config()}).")
