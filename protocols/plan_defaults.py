"""The plan a user gets for what they leave out: the generator family, its rounds, SecAgg+.

`StudyPlan`'s field defaults are the library's (a VAE plan, which callers and tests
build on). What a user is offered when they set nothing — by `fedsynth-coordinator
demo` and `simulate`, by `flwr run .` (pyproject.toml's run config, which a test
holds to `default_plan`) and by a provisioned consortium's run config — is decided
here, once:

- the generator family is `DEFAULT_FAMILY`, with the number of rounds it asks for;
- SecAgg+ is on from `SECURE_AGGREGATION_MIN_SITES` sites. With two, each site could
  subtract its own update from the sum and read the other's, so SecAgg+ would protect
  nothing against the other site; with one there is no sum to hide in;
- under SecAgg+, every site is in every secure sum (min-sites = the number of sites:
  a site that drops out stops the study before anything is released) and at most
  `DEFAULT_COLLUDERS` site is assumed to side with the coordinator, or none where the
  plan's rules leave no room for one.
"""

from __future__ import annotations

from typing import Any

from protocols.errors import PlanError
from protocols.generators import FAMILIES, family_for
from protocols.plan import StudyPlan

DEFAULT_FAMILY = "marginals"
SECURE_AGGREGATION_MIN_SITES = 3
DEFAULT_COLLUDERS = 1


def secure_aggregation_by_default(n_sites: int) -> bool:
    """Whether SecAgg+ protects anything in a study of `n_sites` sites."""
    return n_sites >= SECURE_AGGREGATION_MIN_SITES


def default_plan(n_sites: int, **given: Any) -> tuple[StudyPlan, list[str]]:
    """The plan of a study of `n_sites` sites whose user set only `given` (plan field
    names; None: not given), and one line for each default the user should hear about.
    What the user gave always wins; the plan's own checks and the family's run later."""
    chosen = {name: value for name, value in given.items() if value is not None}
    family = FAMILIES.get(chosen.setdefault("generator", DEFAULT_FAMILY))
    if "rounds" not in chosen and family is not None and family.default_rounds is not None:
        chosen["rounds"] = family.default_rounds
    notes = []
    secure_by_default = "secure_aggregation" not in chosen
    if secure_by_default:
        chosen["secure_aggregation"] = secure_aggregation_by_default(n_sites)
    if chosen["secure_aggregation"]:
        chosen.setdefault("min_sites", n_sites)
        if "colluders" not in chosen:
            chosen["colluders"] = _colluders(chosen, notes)
    if secure_by_default:
        notes.insert(0, _secure_note(n_sites, chosen))
    return StudyPlan().with_overrides(**chosen), notes


def secure_run_config(plan: StudyPlan) -> str:
    """`plan`'s SecAgg+ settings as Flower run-config keys (`key=value ...`), to go on top of
    pyproject.toml's run config, which has SecAgg+ off; empty where `plan` has it off too."""
    if not plan.secure_aggregation:
        return ""
    return f"secure-aggregation=true min-sites={plan.min_sites} colluders={plan.colluders}"


def _colluders(chosen: dict[str, Any], notes: list[str]) -> int:
    """`DEFAULT_COLLUDERS`, or 0 (said in `notes`) where one colluding site would break
    the plan's rules and none would not. A plan refused either way keeps the default,
    so that its own error, not this choice, is what the user reads."""
    if _keeps_rules({**chosen, "colluders": DEFAULT_COLLUDERS}) \
            or not _keeps_rules({**chosen, "colluders": 0}):
        return DEFAULT_COLLUDERS
    notes.append(f"colluders: 0, not {DEFAULT_COLLUDERS}: with min-sites "
                 f"{chosen['min_sites']} the plan's rules leave no room for a site that "
                 "sides with the coordinator")
    return 0


def _keeps_rules(values: dict[str, Any]) -> bool:
    try:
        family_for(StudyPlan().with_overrides(**values))
    except PlanError:
        return False
    return True


def _secure_note(n_sites: int, chosen: dict[str, Any]) -> str:
    if not chosen["secure_aggregation"]:
        return (f"secure aggregation: off by default with {n_sites} site(s): SecAgg+ needs "
                f"{SECURE_AGGREGATION_MIN_SITES}, since with 2 each site could subtract its "
                "own update from the sum and read the other's (--secure-aggregation turns it "
                "on anyway)")
    min_sites = chosen["min_sites"]
    dropout = ", so a site that drops out stops the study" if min_sites >= n_sites else ""
    return (f"secure aggregation: on by default with {n_sites} sites: SecAgg+ shows the "
            f"coordinator only sums of at least {min_sites} sites' updates (min-sites "
            f"{min_sites}{dropout}), assuming at most {chosen['colluders']} site sides with "
            "it (--no-secure-aggregation turns it off)")
