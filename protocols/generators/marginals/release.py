"""A site's release in the marginals family: two stages, once per study.

See `protocols.generators.marginals.tables` for the mechanism and its guarantee. Round 1: the
site's noisy column tables (its pair tables are sent as zeros: nothing is
released there yet). Round 2: the column tables it received (the sites'
average, echoed unchanged) and its noisy pair tables on coarse bins cut at
quantiles of that average. Under secure aggregation the site adds only its
share of the central noise (`tables.site_noise_multiplier`): the secure sum
carries the rest. The noise and the ε reported depend on the plan and the
public schema only, never on the site's size; the node refuses a third release
(the whole ε is spent by the two).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from protocols.count_tables import build_layout
from protocols.errors import BudgetError
from protocols.generators.family import LocalRelease, SiteRecords
from protocols.generators.marginals.tables import (STAGES, noisy_column_tables,
                                                   noisy_pair_tables, site_noise_multiplier,
                                                   stages_epsilon, table_counts)
from protocols.plan import StudyPlan
from protocols.schema import Schema


def release_marginals(schema: Schema, site: SiteRecords, plan: StudyPlan, released_before: int,
                      global_tables: Mapping[str, np.ndarray]) -> LocalRelease:
    """The site's next stage, given the global tables of this round."""
    if released_before >= STAGES:
        raise BudgetError(f"Site {site.name} has already released its tables for this study; "
                          "another release would spend the privacy budget twice.")
    layout = build_layout(schema)
    noise = site_noise_multiplier(plan, *table_counts(layout))
    columns = {k: np.asarray(v, dtype=float) for k, v in global_tables.items()
               if k.startswith("1|")}
    if released_before == 0:
        pairs = {k: np.zeros_like(v, dtype=float) for k, v in global_tables.items()
                 if not k.startswith("1|")}
        tables = {**noisy_column_tables(layout, site.parsed, noise), **pairs}
    else:
        staged = layout.with_groups(columns)
        tables = {**columns, **noisy_pair_tables(staged, site.parsed, noise)}
    stage = released_before + 1
    epsilon = stages_epsilon(layout, plan, stage)
    return LocalRelease(arrays=tables, steps=1, steps_total=stage, epsilon=epsilon)
