"""How far an honest site's marginal tables can lie from what the plan prescribes.

A table entry is a whole number: a count (≥ 0) plus discrete Gaussian noise of the stage's σ; a
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

from protocols.generators.marginals.tables import site_noise_multiplier, table_noise_scales
from protocols.plan import StudyPlan
from protocols.privacy.site_limits import MAX_SITE_RECORDS

NOISE_SIGMAS = 10.0


def tables_problem(plan: StudyPlan, server_round: int, sent: Mapping[str, np.ndarray],
                   reply: Mapping[str, np.ndarray]) -> str | None:
    n_one = sum(name.startswith("1|") for name in sent)
    n_two = len(sent) - n_one
    sigmas = table_noise_scales(n_one, n_two, site_noise_multiplier(plan, n_one, n_two))
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
