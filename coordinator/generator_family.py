"""What the coordinator does differently for each generator family of the plan.

- "vae": the global arrays are the VAE's weights, averaged over many rounds of
  DP-SGD; the cohort is sampled from the averaged VAE.
- "marginals": the global arrays are the column and pair tables (zeros to
  start): round 1 averages the sites' noisy column tables, round 2 their noisy
  pair tables on coarse bins cut from round 1's average; the cohort is sampled
  from a Chow–Liu tree fitted on them, with the same coarse bins.
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


def sample_release(schema: Schema, plan: StudyPlan, arrays: ArrayRecord,
                   first_round: ArrayRecord | None = None) -> pd.DataFrame:
    """`plan.rows` synthetic records from the final global arrays. For the marginals
    family, `first_round` (the round-1 average the sites cut their coarse bins from)
    gives the coarse bins; without it they are cut from the final column tables."""
    state = arrays.to_torch_state_dict()
    if plan.generator == "marginals":
        tables = {name: tensor.numpy() for name, tensor in state.items()}
        cut_from = (tables if first_round is None else
                    {k: t.numpy() for k, t in first_round.to_torch_state_dict().items()})
        layout = build_layout(schema).with_groups(cut_from)
        return sample_tree(fit_tree(layout, tables), plan.rows,
                           plan.seed + _SAMPLING_SEED_OFFSET)
    return sample_cohort(generator_from_state(schema, plan, state), plan.rows, plan.seed)
