"""The node's release for the marginals generator: noisy tables, once per study.

See `protocols.marginals` for the mechanism and its guarantee. The node checks
δ < 1/n, refuses a second release in the same study (the whole ε is spent by
the first), and reports the ε of Opacus' accountant for the noise it used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.site_data import SiteData
from protocols.accounting import check_delta
from protocols.errors import BudgetError
from protocols.marginals import (build_layout, noisy_tables, release_epsilon,
                                 release_noise_multiplier)
from protocols.plan import StudyPlan
from protocols.schema import Schema


@dataclass(frozen=True)
class MarginalRelease:
    tables: dict[str, np.ndarray]
    epsilon: float


def release_marginals(schema: Schema, site: SiteData, plan: StudyPlan,
                      released_before: int) -> MarginalRelease:
    if released_before:
        raise BudgetError(f"Site {site.name} has already released its tables for this study; "
                          "a second release would spend the privacy budget twice.")
    if plan.private:
        check_delta(plan.delta, site.n_records, site.name)
    noise = release_noise_multiplier(plan.epsilon, plan.delta)
    tables = noisy_tables(build_layout(schema), site.parsed, noise)
    return MarginalRelease(tables=tables, epsilon=release_epsilon(noise, plan.delta))
