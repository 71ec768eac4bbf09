"""Checking the global arrays a coordinator sends before the node trains on them.

The node trains only the model the plan and its own schema define: arrays of
other names, shapes or dtypes (another study's model, a damaged message),
holding NaN/Inf, or holding a value beyond what an honest global model ever
holds (the secure-aggregation range of the family: ±64 for the VAE, whose
weights stay below 16 even after 60 rounds without DP) are refused before the
ledger is touched, so a broken or hostile global model costs the site no
budget. The bound is public; a crafted model of huge weights could otherwise
make one patient's loss overflow (DP-SGD also leaves such a record out of its
step: protocols.generators.vae.training).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from protocols.errors import PlanError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.schema import Schema


def expected_arrays(schema: Schema, plan: StudyPlan) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of the global arrays of `plan` on `schema`."""
    return {name: (tuple(value.shape), str(value.dtype))
            for name, value in family_for(plan).global_arrays(schema, plan).items()}


def check_global_arrays(received: ArrayRecord, schema: Schema, plan: StudyPlan,
                        site: str) -> None:
    """Refuse global arrays that are not the plan's model on this site's schema."""
    expected = expected_arrays(schema, plan)
    largest = family_for(plan).secure_range
    if set(received.keys()) != set(expected):
        unexpected = sorted(set(received.keys()) ^ set(expected))[:3]
        raise PlanError(f"Site {site} refuses the global model: its arrays are not those of "
                        f"the plan's {plan.generator} model on this site's schema (differing: "
                        f"{', '.join(unexpected)}).")
    for name, array in received.items():
        value = array.numpy()
        shape, dtype = expected[name]
        if tuple(value.shape) != shape or str(value.dtype) != dtype:
            raise PlanError(f"Site {site} refuses the global model: array {name} has shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}, but the plan's model "
                            f"has {shape} and {dtype}.")
        if not np.all(np.isfinite(value)):
            raise PlanError(f"Site {site} refuses the global model: array {name} holds NaN "
                            "or Inf.")
        if value.size and float(np.max(np.abs(value))) > largest:
            raise PlanError(f"Site {site} refuses the global model: array {name} holds a "
                            f"value beyond ±{largest:g}, more than an honest global model "
                            "ever holds.")
