"""Local DP-SGD training of the shared generator (Opacus).

One call trains one round: `plan.local_steps` steps, each on a Poisson sample
of the site's records (every record independently with probability q, the
plan's `sample_rate`), with per-record gradient clipping to
`plan.max_grad_norm` and Gaussian noise of multiplier σ (Opacus' ghost-clipping
`GradSampleModuleFastGradientClipping` + a `DPOptimizerFastGradientClipping`
whose noise comes from `protocols.privacy.dp_noise`).

Guarantee: q and σ come from the plan alone (`accounting`), fixed
before round 1 for all `rounds × local_steps` steps, so the ε a node reports
after each round is the same at every site whatever its size; the steps of
earlier rounds carry over, and a node never runs more steps than the plan
allows. The noisy gradient sum is divided by a public constant, never by the
site's expected batch q·n (which would scale the release by a function of n):
Adam's step is invariant to a constant scale of its gradients, so the
constant changes nothing but what the normaliser would reveal.

Every random draw (Poisson masks, noise) comes from the operating system's
CSPRNG, never from a seeded generator: noise the coordinator could reproduce
would be noise it could subtract.

With `epsilon = inf` the same model is trained with the same sampling and
optimiser, without clipping or noise (the non-private reference).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

from protocols.errors import BudgetError
from protocols.generators.family import SitePrivacy
from protocols.generators.vae.accounting import dpsgd_epsilon
from protocols.generators.vae.bounds import ADAM_BETAS
from protocols.generators.vae.model import TabularVAE, per_record_loss
from protocols.plan import StudyPlan
from protocols.privacy.dp_noise import poisson_mask, secure_normal

# What the noisy gradient sum is divided by: a public constant (see the module docstring).
GRADIENT_NORMALISER = 1


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
    if plan.private:
        module, optimizer = dp_setup(model, plan, privacy)
    else:
        module, optimizer = model, _adam(model, plan)
    losses = []
    batches = poisson_batches(len(records), privacy.sample_rate)
    with warnings.catch_warnings():
        # Opacus' hooks fire on module outputs because records need no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(plan.local_steps):
            batch = records[torch.from_numpy(next(batches))]
            losses.append(train_step(module, optimizer, model, batch, plan.private))
    if plan.private:
        module.remove_hooks()
    steps_total = steps_before + plan.local_steps
    return RoundOutcome(steps=plan.local_steps, steps_total=steps_total,
                        epsilon=dpsgd_epsilon(plan, steps_total),
                        mean_loss=float(np.nanmean(losses)) if losses else float("nan"))


def poisson_batches(n_records: int, sample_rate: float) -> Iterator[np.ndarray]:
    """Endless Poisson samples: each step's indices, every record in with probability
    `sample_rate`, independently, from the OS CSPRNG (an empty sample is a valid step)."""
    while True:
        yield np.flatnonzero(poisson_mask(n_records, sample_rate))


def _adam(model: torch.nn.Module, plan: StudyPlan) -> torch.optim.Optimizer:
    # The betas are part of the contract: the coordinator bounds a round's change by them.
    return torch.optim.Adam(model.parameters(), lr=plan.learning_rate, betas=ADAM_BETAS)


class SecureNoiseOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' ghost-clipping DP optimiser, its Gaussian noise drawn from the OS CSPRNG
    (`protocols.privacy.dp_noise.secure_normal`) instead of torch's seeded generator."""

    def add_noise(self) -> None:
        # One draw for every parameter of the step: the CSPRNG's cost is per call.
        sizes = [p.summed_grad.numel() for p in self.params]
        noise = torch.from_numpy(secure_normal(sum(sizes),
                                               self.noise_multiplier * self.max_grad_norm))
        for p, part in zip(self.params, torch.split(noise, sizes), strict=True):
            _check_processed_flag(p.summed_grad)
            noisy = p.summed_grad.double() + part.view_as(p.summed_grad)
            p.grad = noisy.to(p.summed_grad.dtype).view_as(p)
            _mark_as_processed(p.summed_grad)


def dp_setup(model: TabularVAE, plan: StudyPlan, privacy: SitePrivacy
             ) -> tuple[GradSampleModuleFastGradientClipping, SecureNoiseOptimizer]:
    """Wrap `model` for ghost-clipped DP-SGD with CSPRNG noise of the plan's σ."""
    module = GradSampleModuleFastGradientClipping(
        model, loss_reduction="mean", max_grad_norm=plan.max_grad_norm, use_ghost_clipping=True)
    optimizer = SecureNoiseOptimizer(
        _adam(module, plan), noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=plan.max_grad_norm, expected_batch_size=GRADIENT_NORMALISER,
        loss_reduction="mean")
    return module, optimizer


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, model: TabularVAE,
               batch: torch.Tensor, private: bool) -> float:
    """One (DP-)SGD step; an empty Poisson batch still takes a noise-only DP step."""
    if private:
        return _dp_step(module, optimizer, model, batch)
    optimizer.zero_grad(set_to_none=True)
    out, mu, logvar = module(batch)
    per_record = per_record_loss(model.encoding, batch, out, mu, logvar)
    if len(batch):
        per_record.mean().backward()
    optimizer.step()
    return float(per_record.mean().detach()) if len(batch) else float("nan")


def _dp_step(module: GradSampleModuleFastGradientClipping, optimizer: SecureNoiseOptimizer,
             model: TabularVAE, batch: torch.Tensor) -> float:
    """Ghost clipping: per-record gradient norms from the layers' activations and output
    gradients, then a second backward pass weighted by the clip factors, then noise.

    Clipping bounds a record's contribution only if its gradient is finite: a crafted
    global model can make one patient's loss overflow, and a NaN clip factor would turn
    the whole update into NaN exactly when that patient is sampled. So a record whose loss
    or gradient norm is not finite contributes nothing (norm 0 ≤ C, so the sensitivity
    is still C) and the step is computed again without it; other records' losses and
    gradients do not depend on it, so the rest of the step is unchanged."""
    while True:
        optimizer.zero_grad(set_to_none=True)
        out, mu, logvar = module(batch)
        per_record = per_record_loss(model.encoding, batch, out, mu, logvar)
        # Both passes run even over a non-finite record: Opacus' hooks reset in them.
        DPTensorFastGradientClipping(module, optimizer, per_record, "mean").backward()
        if not len(batch):
            break
        finite = (torch.isfinite(per_record.detach())
                  & torch.isfinite(module.per_sample_gradient_norms.detach()))
        if finite.all():
            break
        batch = batch[finite]
    optimizer.step()
    return float(per_record.mean().detach()) if len(batch) else float("nan")
