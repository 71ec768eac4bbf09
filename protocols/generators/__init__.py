"""The generator families, registered once: a plan names one, everything else asks it.

Add a family by writing its folder here (a `GeneratorFamily` subclass and the
modules it needs) and one line in `FAMILIES`; the node, the coordinator, the
manifest and the CLIs find it through `family_for`.
"""

from __future__ import annotations

from protocols.errors import PlanError
from protocols.generators.family import GeneratorFamily
from protocols.generators.marginals.family import MarginalsFamily
from protocols.generators.vae.family import VaeFamily
from protocols.plan import StudyPlan
from protocols.privacy.site_limits import MIN_SITE_RECORDS

FAMILIES: dict[str, GeneratorFamily] = {family.name: family for family in (
    VaeFamily(),
    MarginalsFamily(),
)}


def family_for(plan: StudyPlan) -> GeneratorFamily:
    """The plan's family, once the plan keeps the family's own rules."""
    family = FAMILIES.get(plan.generator)
    if family is None:
        rule = f"generator must be one of {', '.join(FAMILIES)}"
    else:
        problems = family.plan_problems(plan)
        if not problems:
            return family
        rule = problems[0]
    raise PlanError(f"Study plan is invalid: {rule} (plan: {plan.to_config()}).")


def check_site_size(plan: StudyPlan, n_records: int, source: str) -> None:
    """Refuse, on the operator's side and before anything runs, a site that `plan` would
    not protect meaningfully (never called on a node's answer to a coordinator)."""
    family = family_for(plan)
    smallest = family.minimum_site_records(plan)
    if n_records >= smallest or not plan.private:
        return
    if n_records < MIN_SITE_RECORDS:
        problem = f"it has {n_records} records, fewer than the {MIN_SITE_RECORDS} any study needs"
    else:
        problem = family.too_small(plan, n_records)
    raise PlanError(f"{source}: too small for a meaningful differentially private study: "
                    f"{problem}. This plan needs at least {smallest} records per site; a "
                    "larger epsilon, or fewer rounds or local steps, lower the minimum.")
