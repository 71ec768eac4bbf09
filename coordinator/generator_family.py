"""What the coordinator does differently for each generator family of the plan.

- "vae": the global arrays are the VAE's weights, averaged over many rounds of
  DP-SGD; the cohort is sampled from the averaged VAE.
- "marginals": the global arrays are the column and pair tables (zeros to
  start), averaged over the sites' single noisy release; the cohort is sampled
  from a Chow–Liu tree fitted on them.
Either way the cohort is post-processing of the sites' DP outputs.
"""

from __future__ import annotations

import pandas as pd
import torch
from flwr.app import ArrayRecord

from coordinator.cohort import generator_from_state, sample_cohort
from coordinator.marginal_tree import fit_tree, sample_tree
from protocols.encoding import build_encoding
from protocols.generator import build_generator
from protocols.marginals import build_layout
from protocols.plan import StudyPlan
from protocols.schema import Schema

_SAMPLING_SEED_OFFSET = 7919


def initial_arrays(schema: Schema, plan: StudyPlan) -> ArrayRecord:
    if plan.generator == "marginals":
        shapes = build_layout(schema).table_shapes()
        return ArrayRecord(torch_state_dict={name: torch.zeros(shape, dtype=torch.float64)
                                             for name, shape in shapes.items()})
    model = build_generator(build_encoding(schema), plan.hidden, plan.latent, plan.seed)
    return ArrayRecord(model.state_dict())


def sample_release(schema: Schema, plan: StudyPlan, arrays: ArrayRecord) -> pd.DataFrame:
    """`plan.rows` synthetic records from the final global arrays."""
    state = arrays.to_torch_state_dict()
    if plan.generator == "marginals":
        tables = {name: tensor.numpy() for name, tensor in state.items()}
        model = fit_tree(build_layout(schema), tables)
        return sample_tree(model, plan.rows, plan.seed + _SAMPLING_SEED_OFFSET)
    return sample_cohort(generator_from_state(schema, plan, state), plan.rows, plan.seed)
