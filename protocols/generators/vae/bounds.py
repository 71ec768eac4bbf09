"""How far an honest VAE update can lie from the global weights it was sent.

Both sides know the plan, so the coordinator can tell, from the plan alone and
without looking at any data, whether a reply could have come from the
training the plan prescribes. A reply outside these bounds is not a noisy
update but a broken or hostile one, and is left out of the average.

VAE (DP-SGD). Every node steps with torch's Adam (`ADAM_BETAS`, no weight
decay, state restarted each round) on clipped and noised gradients. Per
weight, Adam's step t is lr·m̂_t / (√v̂_t + eps); by Cauchy–Schwarz,
|m_t| ≤ (1−β1)·√(Σ_j (β1²/β2)^j)·√(v_t/(1−β2)), so with the bias corrections
the step is at most lr·a_t with

    a_t = (1−β1)/√(1−β2) · √(Σ_{j<t} (β1²/β2)^j) · √(1−β2^t) / (1−β1^t),

whatever the gradients were (clipping and noise only change which gradients).
A round of K steps therefore moves no weight by more than lr·Σ_{t≤K} a_t.
On the demo sites, one honest round of the default plan moved its largest
weight by 0.73–0.97 of this bound (private and non-private alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from protocols.plan import StudyPlan

ADAM_BETAS = (0.9, 0.999)
_ROUNDING = 1.001  # float32 arithmetic in Adam's moments (the weights' own rounding is added)


def adam_step_bound(step: int, betas: tuple[float, float] = ADAM_BETAS) -> float:
    """The largest |change| of one weight at Adam's step `step` (1-based), in units of lr."""
    beta1, beta2 = betas
    ratio = beta1 ** 2 / beta2
    geometric = (1 - ratio ** step) / (1 - ratio)
    return ((1 - beta1) / math.sqrt(1 - beta2) * math.sqrt(geometric)
            * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step))


def largest_weight_change(plan: StudyPlan) -> float:
    """The most any weight can move in one honest round of `plan.local_steps` steps."""
    return plan.learning_rate * sum(adam_step_bound(t) for t in range(1, plan.local_steps + 1))


def update_problem(plan: StudyPlan, sent: Mapping[str, np.ndarray],
                   reply: Mapping[str, np.ndarray], slack: float = 0.0) -> str | None:
    """Why `reply` (same names, shapes and dtypes as `sent`, all finite) cannot be an
    honest answer to `sent` under `plan`, or None if it can be.

    The VAE bound holds for any weighted average of honest replies too (SecAgg+'s
    sum); `slack` adds the error of its quantisation."""
    bound = largest_weight_change(plan)
    for name, weights in reply.items():
        start = np.asarray(sent[name], dtype=np.float64)
        change = float(np.max(np.abs(weights.astype(np.float64) - start), initial=0.0))
        # Each float32 step may round the weight by half an ulp of its size, whatever lr is.
        largest = float(np.max(np.abs(start), initial=0.0)) + bound
        limit = (bound * _ROUNDING + plan.local_steps * float(np.spacing(np.float32(largest)))
                 + slack)
        if change > limit:
            return (f"layer {name} moved by {change:.4g}, beyond the {limit:.4g} that "
                    f"{plan.local_steps} Adam steps at learning rate {plan.learning_rate:g} "
                    "allow")
    return None
