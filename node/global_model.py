"""Checking the global arrays a coordinator sends before the node trains on them.

The node trains only the model the plan and its own schema define: arrays of
other names, shapes or dtypes (another study's model, a damaged message),
holding NaN/Inf, or holding a value beyond what an honest global model ever
holds (the secure-aggregation range of the family: ±64 for the VAE, whose
weights stay below 16 even after 60 rounds without DP) are refused before the
ledger is touched, so a broken or hostile global model costs the site no
budget. The bound is public; a crafted model of huge weights could otherwise
make one patient's loss overflow (DP-SGD also leaves such a record out of its
step: node.training).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from protocols.encoding import build_encoding
from protocols.errors import PlanError
from protocols.generator import build_generator
from protocols.marginals import build_layout
from protocols.plan import StudyPlan
from protocols.schema import Schema
from protocols.secure_aggregation import CLIPPING_RANGES


def expected_arrays(schema: Schema, plan: StudyPlan) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of the global arrays of `plan` on `schema`."""
    if plan.generator == "marginals":
        return {name: (tuple(shape), "float64")
                for name, shape in build_layout(schema).table_shapes().items()}
    model = build_generator(build_encoding(schema), plan.hidden, plan.latent, plan.seed)
    return {name: (tuple(t.shape), str(t.numpy().dtype)) for name, t in model.state_dict().items()}


def check_global_arrays(received: ArrayRecord, schema: Schema, plan: StudyPlan,
                        site: str) -> None:
    """Refuse global arrays that are not the plan's model on this site's schema."""
    expected = expected_arrays(schema, plan)
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
        largest = CLIPPING_RANGES[plan.generator]
        if value.size and float(np.max(np.abs(value))) > largest:
            raise PlanError(f"Site {site} refuses the global model: array {name} holds a "
                            f"value beyond ±{largest:g}, more than an honest global model "
                            "ever holds.")
