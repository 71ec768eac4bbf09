"""The hospital's caps on any one study, set in its `node.toml` (`[limits]`).

The site's ε and δ budgets bound what all studies together may spend; these caps
bound what one study may ask, whatever budget is left: its ε and δ, its rounds ×
local steps (the node's compute), the size of the model it makes the node hold,
and the rows of a cohort it asks the node to score. They are checked on the plan
alone, before the ledger is touched and before anything of the study is allocated:
the model's size is counted on PyTorch's meta device, which holds shapes and no
memory, so a plan with hidden = 10^5 is refused before any weight exists. A refusal
names the cap, the plan's value and the node.toml key to change, in the node's log;
the coordinator gets the one fixed refusal text.

The defaults (`protocols.kit_layout.CAP_DEFAULTS`) suit fedsynth's rare-disease
studies (the default plan asks ε 3, δ 1e-5, 15 × 20 steps, a VAE of about 14 000
parameters, 1000 rows) with room to spare, and keep any one study to half of the
default lifetime budget (ε 10); a simulation, where the harness plays both sides,
has no caps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols import kit_layout as layout
from protocols.config import read_positive, read_whole_number
from protocols.errors import FedsynthError, PlanError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.schema import Schema


@dataclass(frozen=True)
class StudyCaps:
    """What one study may ask of this node (defaults: a deployed node without [limits])."""

    max_epsilon: float = float(layout.CAP_DEFAULTS[layout.MAX_EPSILON])
    max_delta: float = float(layout.CAP_DEFAULTS[layout.MAX_DELTA])
    max_total_steps: int = int(layout.CAP_DEFAULTS[layout.MAX_TOTAL_STEPS])
    max_model_parameters: int = int(layout.CAP_DEFAULTS[layout.MAX_MODEL_PARAMETERS])
    max_rows_to_score: int = int(layout.CAP_DEFAULTS[layout.MAX_ROWS_TO_SCORE])


NO_CAPS = StudyCaps(math.inf, 1.0, 2**62, 2**62, 2**62)

# node.toml [limits] key -> StudyCaps field; the same names in the SuperNode's node config.
CAP_KEYS = {layout.MAX_EPSILON: "max_epsilon", layout.MAX_DELTA: "max_delta",
            layout.MAX_TOTAL_STEPS: "max_total_steps",
            layout.MAX_MODEL_PARAMETERS: "max_model_parameters",
            layout.MAX_ROWS_TO_SCORE: "max_rows_to_score"}


def read_caps(values: Mapping[str, Any], where: str,
              error: type[FedsynthError] = FedsynthError) -> StudyCaps:
    """Caps from `values` keyed by the node.toml key names (a missing key: its default);
    `where` names the file or config in a refusal."""
    caps: dict[str, Any] = {}
    for key, field in CAP_KEYS.items():
        value = values.get(key.key)
        if value is None:
            continue
        what = f"{where}: {key}"
        if field == "max_epsilon":
            caps[field] = read_positive(value, what, error, infinite=True)
        elif field == "max_delta":
            caps[field] = read_positive(value, what, error, at_most=1.0)
        else:
            caps[field] = read_whole_number(value, what, error)
            if caps[field] < 1:
                raise error(f"{what} = {value!r} must be at least 1.")
    return StudyCaps(**caps)


def refuse_beyond_caps(plan: StudyPlan, schema: Schema, caps: StudyCaps, site: str) -> None:
    """Refuse a plan that asks more than one of the site's caps (before anything runs)."""
    for key, asked in ((layout.MAX_EPSILON, plan.epsilon), (layout.MAX_DELTA, plan.delta),
                       (layout.MAX_TOTAL_STEPS, plan.total_steps)):
        _refuse_above(site, key, asked, caps, _what(key, plan))
    values = family_for(plan).model_values(schema, plan)  # counted, never allocated
    _refuse_above(site, layout.MAX_MODEL_PARAMETERS, values, caps,
                  f"a {plan.generator} model of this many values (hidden {plan.hidden}, "
                  f"latent {plan.latent})")


def refuse_cohort_beyond_cap(cohort_csv: bytes, plan: StudyPlan, caps: StudyCaps,
                             site: str) -> None:
    """Refuse to score a cohort of more rows than the site's cap (its lines are counted
    on the bytes received, before anything is parsed)."""
    rows = max(plan.rows, cohort_csv.count(b"\n") - 1)
    _refuse_above(site, layout.MAX_ROWS_TO_SCORE, rows, caps, "a cohort of this many rows to "
                  "score")


def _what(key: layout.TomlKey, plan: StudyPlan) -> str:
    if key == layout.MAX_TOTAL_STEPS:
        return f"rounds x local steps ({plan.rounds} x {plan.local_steps})"
    return "epsilon for the study" if key == layout.MAX_EPSILON else "delta for the study"


def _refuse_above(site: str, key: layout.TomlKey, asked: float, caps: StudyCaps,
                  what: str) -> None:
    cap = getattr(caps, CAP_KEYS[key])
    if asked <= cap:
        return
    raise PlanError(f"Site {site} refuses the study: it asks {what} = {asked:g}, above this "
                    f"site's cap of {cap:g} ({layout.NODE_TOML} {key}). Nothing was allocated, "
                    "trained or charged. If the hospital agrees to such studies, its operator "
                    f"raises {key.key} in node.toml and restarts the node.")
