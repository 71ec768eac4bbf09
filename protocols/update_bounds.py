"""How far an honest node's reply can lie from the global arrays it was sent.

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

Marginals (discrete Gaussian mechanism on counts). A table entry is a whole
number: a count (≥ 0) plus discrete Gaussian noise of the stage's σ; a
deviation beyond `NOISE_SIGMAS`·σ has probability below 1e-23 for an honest
node. Every table a site releases counts the same n records, so their totals
agree up to the noise, and n ≤ `MAX_SITE_RECORDS` (a larger file is refused at
the node's validation). Stage 1 sends its pair tables as exact zeros, stage 2
echoes the global column tables unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from protocols.marginals import release_noise_multiplier, table_noise_scales
from protocols.plan import StudyPlan
from protocols.site_limits import MAX_SITE_RECORDS

ADAM_BETAS = (0.9, 0.999)
NOISE_SIGMAS = 10.0
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


def update_problem(plan: StudyPlan, server_round: int, sent: Mapping[str, np.ndarray],
                   reply: Mapping[str, np.ndarray], slack: float = 0.0) -> str | None:
    """Why `reply` (same names, shapes and dtypes as `sent`, all finite) cannot be an
    honest answer to `sent` in `server_round` under `plan`, or None if it can be.

    The VAE bound holds for any weighted average of honest replies too (SecAgg+'s
    sum); `slack` adds the error of its quantisation."""
    if plan.generator == "marginals":
        return _tables_problem(plan, server_round, sent, reply)
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


def _tables_problem(plan: StudyPlan, server_round: int, sent: Mapping[str, np.ndarray],
                    reply: Mapping[str, np.ndarray]) -> str | None:
    n_one = sum(name.startswith("1|") for name in sent)
    sigmas = table_noise_scales(n_one, len(sent) - n_one, release_noise_multiplier(plan))
    released: dict[str, np.ndarray] = {}
    for name, table in reply.items():
        column = name.startswith("1|")
        if column if server_round >= 2 else not column:
            if not np.array_equal(table, sent[name]):
                expected = "the global table echoed" if column else "zeros (released in stage 2)"
                return f"table {name} is not {expected}"
        else:
            released[name] = table
    sigma = sigmas[0] if server_round < 2 else sigmas[1]
    return _counts_problem(plan, released, sigma)


def _counts_problem(plan: StudyPlan, tables: Mapping[str, np.ndarray],
                    sigma: float) -> str | None:
    """Released tables are counts of the same n records plus integer noise σ per cell:
    whole numbers, no cell far below zero or above its table's total, every table's total
    the same n up to the noise, and n at most `MAX_SITE_RECORDS`."""
    totals = {name: float(table.sum()) for name, table in tables.items()}
    if not totals:
        return None
    n = float(np.median(list(totals.values())))
    widest = max(math.sqrt(table.size) for table in tables.values())
    rounding = 1e-9 * max(1.0, abs(n))
    for name, table in tables.items():
        spread = NOISE_SIGMAS * sigma * math.sqrt(table.size)
        if not np.array_equal(table, np.rint(table)):
            return f"table {name} holds values that are not whole numbers"
        if table.size and float(table.min()) < -NOISE_SIGMAS * sigma - rounding:
            return (f"table {name} holds a count of {float(table.min()):.4g}, below what "
                    f"Gaussian noise of {sigma:.3g} on counts allows")
        if table.size and float(table.max()) > totals[name] + NOISE_SIGMAS * sigma + spread:
            return f"table {name} holds a cell of {float(table.max()):.4g}, above its total"
        if abs(totals[name] - n) > spread + NOISE_SIGMAS * sigma * widest + rounding:
            return (f"table {name} counts {totals[name]:.6g} records, but the site's other "
                    f"tables count about {n:.6g}: one record set cannot give both")
    if n > MAX_SITE_RECORDS + NOISE_SIGMAS * sigma * widest:
        return (f"the tables count about {n:.6g} records, more than the {MAX_SITE_RECORDS} "
                "a site may hold")
    return None
