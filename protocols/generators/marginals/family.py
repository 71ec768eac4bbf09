"""The marginals family: noisy column, then pair count tables, pooled into a graphical model.

Two rounds, one per stage of each site's release (`release`; mechanism and
guarantee in `tables`): round 1 averages the sites' noisy column tables, round
2 their noisy pair tables on coarse bins cut from round 1's average. A reply is
checked as counts plus the plan's integer noise (`bounds`); the cohort is
sampled from a graphical model fitted to the averaged tables with private-pgm
(`graphical`), with the coarse bins cut from round 1's average, as the sites cut
theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from protocols.count_tables import build_layout
from protocols.generators.family import (Arrays, GeneratorFamily, LocalRelease, SitePrivacy,
                                         SiteRecords, sampling_seed)
from protocols.generators.marginals.bounds import tables_problem
from protocols.generators.marginals.graphical import fit_model, sample_model
from protocols.generators.marginals.release import release_marginals
from protocols.generators.marginals.tables import (STAGES, exposed_epsilon,
                                                   site_noise_multiplier, stages_epsilon,
                                                   table_counts)
from protocols.plan import StudyPlan
from protocols.privacy.secure_aggregation import reconstruction_threshold
from protocols.schema import Schema


class MarginalsFamily(GeneratorFamily):
    name = "marginals"
    summary = "each site releases noisy column, then pair tables (2 rounds)"
    mechanism = ("the discrete Gaussian mechanism on column and pair count tables, released "
                 "once, with exact integer noise from a CSPRNG")
    cohort_model = ("the coordinator sums the sites' noisy tables, fits one graphical model "
                    "to all of them (private-pgm: the maximum-entropy distribution closest to "
                    "the noisy tables) and samples the cohort from it; it never sees a record")
    # A count table's cells stay far below this (a site holds at most 50,000 records).
    secure_range = float(2**20)
    default_rounds = STAGES

    def plan_problems(self, plan: StudyPlan) -> list[str]:
        problems = []
        if plan.rounds != STAGES:
            problems.append("the marginals generator releases its tables in two stages: "
                            "rounds must be 2")
        threshold = reconstruction_threshold(plan.min_sites)
        if plan.secure_aggregation and plan.colluders >= threshold:
            # Colluders holding that many key shares could unmask one honest site alone.
            problems.append(f"with min-sites {plan.min_sites}, SecAgg+ unmasks with "
                            f"{threshold} shares, so colluders must be fewer than {threshold}")
        return problems

    def join_problem(self, plan: StudyPlan, server_round: int) -> str | None:
        if server_round > 1:
            return (f"its release comes in two stages from round 1, and joining in round "
                    f"{server_round} would spend budget on tables the coordinator cannot use")
        return None

    def global_arrays(self, schema: Schema, plan: StudyPlan) -> dict[str, np.ndarray]:
        """Zero tables: round 1 fills the column tables, round 2 the pair tables."""
        return {name: np.zeros(shape, dtype=np.float64)
                for name, shape in build_layout(schema).table_shapes().items()}

    def model_values(self, schema: Schema, plan: StudyPlan) -> int:
        # The tables follow from the public schema alone, whatever the plan says.
        return sum(math.prod(shape) for shape in build_layout(schema).table_shapes().values())

    def site_privacy(self, plan: StudyPlan, schema: Schema) -> SitePrivacy:
        # Every record is counted (rate 1); the noise (or the site's share of it, under
        # secure aggregation) is added once, in two stages.
        return SitePrivacy(1.0, site_noise_multiplier(plan, *table_counts(build_layout(schema))))

    def exposed_epsilon(self, plan: StudyPlan, schema: Schema) -> float | None:
        return exposed_epsilon(build_layout(schema), plan)

    def epsilon(self, plan: StudyPlan, schema: Schema, released: int,
                evaluated: bool = False) -> float:
        return stages_epsilon(build_layout(schema), plan, released, evaluated)

    def release(self, schema: Schema, site: SiteRecords, plan: StudyPlan,
                privacy: SitePrivacy, released_before: int, received: Arrays
                ) -> LocalRelease:
        return release_marginals(schema, site, plan, released_before, received)

    def update_problem(self, plan: StudyPlan, server_round: int, sent: Arrays, reply: Arrays,
                       slack: float = 0.0) -> str | None:
        return tables_problem(plan, server_round, sent, reply)

    def average_problem(self, plan: StudyPlan, server_round: int, sent: Arrays,
                        average: Arrays, slack: float) -> str | None:
        # An average of tables is not a table of whole numbers; its range is checked by
        # the secure-aggregation bound alone.
        return None

    def sample(self, schema: Schema, plan: StudyPlan, final: Arrays,
               round_arrays: Callable[[int], Arrays]) -> pd.DataFrame:
        tables = {name: np.asarray(table) for name, table in final.items()}
        layout = build_layout(schema).with_groups(round_arrays(1))
        model = fit_model(layout, tables, outcome=schema.roles.columns)
        return sample_model(model, plan.rows, sampling_seed(plan))
