"""The VAE family: DP-SGD on a small tabular VAE at every site, averaged over many rounds.

Each round a site trains the global VAE for `local_steps` DP-SGD steps
(`training`, accounted in `accounting`) and sends its weights; the coordinator
averages them (FedAvg or SecAgg+), refusing an update that moved a weight
further than the plan's Adam steps can (`bounds`), and samples the cohort from
the final average (`model`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from protocols.encoding import build_encoding
from protocols.generators.family import (Arrays, GeneratorFamily, LocalRelease, SitePrivacy,
                                         SiteRecords, sampling_seed)
from protocols.generators.vae import accounting
from protocols.generators.vae.bounds import update_problem
from protocols.generators.vae.model import TabularVAE, build_generator, sample_encoded
from protocols.generators.vae.training import train_round
from protocols.plan import StudyPlan
from protocols.schema import Schema


class VaeFamily(GeneratorFamily):
    name = "vae"
    summary = "DP-SGD on a small VAE over many rounds"
    mechanism = ("DP-SGD (Poisson sampling at a rate the plan fixes, per-record clipping, "
                 "Gaussian noise from a CSPRNG) on a tabular VAE")
    cohort_model = ("the coordinator averages the sites' noisy VAE weights round after round "
                    "and samples the cohort from the final decoder")
    # The VAE's weights stay below 16 even after 60 rounds without DP.
    secure_range = 64.0

    def global_arrays(self, schema: Schema, plan: StudyPlan) -> dict[str, np.ndarray]:
        model = _model(schema, plan)
        return {name: tensor.numpy() for name, tensor in model.state_dict().items()}

    def model_values(self, schema: Schema, plan: StudyPlan) -> int:
        with torch.device("meta"):  # shapes only: no memory behind any tensor
            model = _model(schema, plan)
        return sum(tensor.numel() for tensor in model.state_dict().values())

    def site_privacy(self, plan: StudyPlan, schema: Schema) -> SitePrivacy:
        return accounting.dpsgd_privacy(plan)

    def epsilon(self, plan: StudyPlan, schema: Schema, released: int,
                evaluated: bool = False) -> float:
        return accounting.dpsgd_epsilon(plan, released, evaluated)

    def minimum_site_records(self, plan: StudyPlan) -> int:
        return accounting.minimum_site_records(plan)

    def too_small(self, plan: StudyPlan, n_records: int) -> str:
        return accounting.too_small(plan, n_records)

    def release(self, schema: Schema, site: SiteRecords, plan: StudyPlan,
                privacy: SitePrivacy, released_before: int, received: Arrays
                ) -> LocalRelease:
        """One round of DP-SGD on the global VAE."""
        model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
        model.load_state_dict({name: torch.from_numpy(np.asarray(value))
                               for name, value in received.items()})
        outcome = train_round(model, site.encoded, plan, privacy, released_before)
        return LocalRelease(arrays={k: v.detach().numpy() for k, v in model.state_dict().items()},
                            steps=outcome.steps, steps_total=outcome.steps_total,
                            epsilon=outcome.epsilon)

    def update_problem(self, plan: StudyPlan, server_round: int, sent: Arrays, reply: Arrays,
                       slack: float = 0.0) -> str | None:
        return update_problem(plan, sent, reply, slack)

    def sample(self, schema: Schema, plan: StudyPlan, final: Arrays,
               round_arrays: Callable[[int], Arrays]) -> pd.DataFrame:
        model = _model(schema, plan)
        model.load_state_dict({name: torch.from_numpy(np.asarray(value))
                               for name, value in final.items()})
        encoded = sample_encoded(model, plan.rows, sampling_seed(plan))
        return model.encoding.decode(encoded)


def _model(schema: Schema, plan: StudyPlan) -> TabularVAE:
    return build_generator(build_encoding(schema), plan.hidden, plan.latent, plan.seed)
