"""Local DP-SGD training of the shared generator (Opacus).

One call trains one round: `plan.local_steps` steps, each on a Poisson sample
of the site's records (Opacus' `UniformWithReplacementSampler`, rate q =
batch_size / n), with per-record gradient clipping to `plan.max_grad_norm` and
Gaussian noise of multiplier σ (`GradSampleModule` + `DPOptimizer`).

Guarantee: σ is fixed from the plan before round 1 for all
`rounds × local_steps` steps (`protocols.accounting`), and an Opacus RDP
accountant hooked to the optimizer counts every step that actually runs,
carrying the steps of earlier rounds; the ε reported is that accountant's.
A node never runs more steps than the plan allows.

The sampling and noise generators are seeded from the operating system's
entropy, never from the plan's seed: noise the coordinator could reproduce
would be noise it could subtract.

With `epsilon = inf` the same model is trained with the same sampling and
optimiser, without clipping or noise (the non-private reference).
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from protocols.accounting import (accountant_epsilon, check_site_size, noise_multiplier_for,
                                  sample_rate_for)
from protocols.errors import BudgetError
from protocols.generator import TabularVAE, per_record_loss
from protocols.plan import StudyPlan
from protocols.update_bounds import ADAM_BETAS


@dataclass(frozen=True)
class SitePrivacy:
    """The site's DP parameters for the whole study, fixed before round 1."""

    sample_rate: float
    noise_multiplier: float

    @classmethod
    def for_site(cls, plan: StudyPlan, n_records: int, site: str) -> SitePrivacy:
        """Refuses a site too small for `plan` before anything is fixed or spent."""
        check_site_size(plan, n_records, f"Site {site}")
        if plan.generator != "vae":
            # The marginals generator adds its noise in one release (node.marginal_release).
            return cls(sample_rate=1.0, noise_multiplier=0.0)
        rate = sample_rate_for(n_records, plan.batch_size)
        return cls(sample_rate=rate, noise_multiplier=noise_multiplier_for(plan, rate))


@dataclass(frozen=True)
class RoundOutcome:
    """What one local round produced; only `steps` and `epsilon` are shared."""

    steps: int
    steps_total: int
    epsilon: float
    mean_loss: float


def train_round(model: TabularVAE, data: np.ndarray, plan: StudyPlan, privacy: SitePrivacy,
                steps_before: int) -> RoundOutcome:
    """Train `model` in place for one round and account for it."""
    if steps_before + plan.local_steps > plan.total_steps:
        raise BudgetError(f"This site has already run {steps_before} of the plan's "
                          f"{plan.total_steps} DP-SGD steps; another round would exceed the "
                          "privacy budget the study was planned for.")
    records = torch.as_tensor(data, dtype=torch.float32)
    entropy = torch.Generator().manual_seed(secrets.randbits(63))
    sampler = UniformWithReplacementSampler(num_samples=len(records),
                                            sample_rate=privacy.sample_rate, generator=entropy)
    if plan.private:
        module, optimizer, accountant = dp_setup(model, plan, privacy, records,
                                                       steps_before, entropy)
    else:
        module, optimizer, accountant = model, _adam(model, plan), None
    losses = []
    batches = iter(sampler)
    with warnings.catch_warnings():
        # Opacus' hooks fire on module outputs because records need no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(plan.local_steps):
            index = next(batches, None)
            if index is None:
                batches = iter(sampler)
                index = next(batches)
            losses.append(train_step(module, optimizer, model, records[index], plan.private))
    if plan.private:
        module.remove_hooks()
    steps_total = steps_before + plan.local_steps
    epsilon = accountant_epsilon(accountant, plan.delta) if accountant else float("inf")
    return RoundOutcome(steps=plan.local_steps, steps_total=steps_total, epsilon=float(epsilon),
                        mean_loss=float(np.nanmean(losses)) if losses else float("nan"))


def _adam(model: torch.nn.Module, plan: StudyPlan) -> torch.optim.Optimizer:
    # The betas are part of the contract: the coordinator bounds a round's change by them.
    return torch.optim.Adam(model.parameters(), lr=plan.learning_rate, betas=ADAM_BETAS)


def dp_setup(model: TabularVAE, plan: StudyPlan, privacy: SitePrivacy,
             records: torch.Tensor, steps_before: int, entropy: torch.Generator
             ) -> tuple[GradSampleModuleFastGradientClipping,
                        DPOptimizerFastGradientClipping, RDPAccountant]:
    """Wrap `model` for ghost-clipped DP-SGD with an accountant that carries the
    steps of earlier rounds and counts every step the optimiser takes."""
    module = GradSampleModuleFastGradientClipping(
        model, loss_reduction="mean", max_grad_norm=plan.max_grad_norm, use_ghost_clipping=True)
    optimizer = DPOptimizerFastGradientClipping(
        _adam(module, plan), noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=max(1, round(privacy.sample_rate * len(records))),
        loss_reduction="mean", generator=entropy)
    accountant = RDPAccountant()
    if steps_before:
        accountant.history = [(privacy.noise_multiplier, privacy.sample_rate, steps_before)]
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=privacy.sample_rate))
    return module, optimizer, accountant


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, model: TabularVAE,
               batch: torch.Tensor, private: bool) -> float:
    """One (DP-)SGD step; an empty Poisson batch still takes a noise-only DP step."""
    optimizer.zero_grad(set_to_none=True)
    out, mu, logvar = module(batch)
    per_record = per_record_loss(model.encoding, batch, out, mu, logvar)
    if private:
        # Ghost clipping: per-record gradient norms from the layers' activations and
        # output gradients, then a second backward pass weighted by the clip factors.
        DPTensorFastGradientClipping(module, optimizer, per_record, "mean").backward()
    elif len(batch):
        per_record.mean().backward()
    optimizer.step()
    return float(per_record.mean().detach()) if len(batch) else float("nan")
