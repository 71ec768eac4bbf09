"""Privacy accounting for DP-SGD over a whole study.

Every site trains with Poisson sampling at rate q = batch_size / n for
`rounds × local_steps` steps. The noise multiplier is fixed *before round 1*
from the plan's ε and δ and that total number of steps, so that all rounds
together stay within ε: the guarantee is record-level (ε, δ)-DP per site over
the whole study, computed with Opacus' RDP accountant (the same accountant the
node attaches to its optimizer, so the reported ε is that of the steps that
actually ran).
"""

from __future__ import annotations

import math

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from protocols.errors import PlanError
from protocols.plan import StudyPlan

ACCOUNTANT = "rdp"
# Opacus' default RDP orders stop at 63; with few records per site the noise is
# large and the best order lies beyond that, so the default bound is loose.
# Higher orders are equally valid and make it tighter (less noise for the same
# ε). Every ε in fedsynth is computed over these same orders.
RDP_ORDERS = [*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]


def sample_rate_for(n_records: int, batch_size: int) -> float:
    """Poisson sampling rate giving `batch_size` records per step on average."""
    return min(1.0, batch_size / n_records)


def check_delta(delta: float, n_records: int, source: str) -> None:
    """δ must be below 1/n, or the guarantee allows publishing a whole record."""
    if delta >= 1.0 / n_records:
        raise PlanError(f"{source}: delta {delta:g} is not below 1/n = 1/{n_records}; "
                        "with so few records the guarantee would be meaningless. "
                        "Lower delta in the study plan.")


def noise_multiplier_for(plan: StudyPlan, sample_rate: float) -> float:
    """The smallest noise multiplier (to Opacus' tolerance) whose ε over all
    `plan.total_steps` steps at `sample_rate` is at most `plan.epsilon`.

    Returns 0.0 for the non-private reference (`epsilon = inf`).
    """
    if not plan.private:
        return 0.0
    try:
        return float(get_noise_multiplier(
            target_epsilon=plan.epsilon, target_delta=plan.delta, sample_rate=sample_rate,
            steps=plan.total_steps, accountant=ACCOUNTANT, epsilon_tolerance=0.005,
            alphas=RDP_ORDERS))
    except ValueError as exc:
        raise PlanError(f"No noise level reaches epsilon {plan.epsilon:g} with delta "
                        f"{plan.delta:g} over {plan.total_steps} steps: {exc}.") from None


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of `steps` DP-SGD steps at this noise and sampling rate (inf without noise)."""
    if steps == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return accountant_epsilon(accountant, delta)


def accountant_epsilon(accountant: RDPAccountant, delta: float) -> float:
    """ε of everything `accountant` has recorded, over fedsynth's RDP orders."""
    return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))
