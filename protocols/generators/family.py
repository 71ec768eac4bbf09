"""What every generator family answers: the one interface the node, the coordinator and
the contract ask instead of comparing family names.

A family is a mechanism and a way to pool it: what the global arrays of a study
are, what a site releases each round (and with what noise, at what ε), how far
an honest release can lie from what the site was sent, and how the coordinator
turns the pooled arrays into a cohort. Every answer is a function of the plan
and the public schema, and of the records only where the docstring says so
(`release`, run at the node), so both sides compute the same bounds and ε.

Families are registered once, in `protocols.generators`; `family_for(plan)`
resolves the plan's name and checks the family's own rules on the plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from protocols.encoding import TableEncoding
from protocols.plan import StudyPlan
from protocols.privacy.site_limits import MIN_SITE_RECORDS
from protocols.schema import Schema

Arrays = Mapping[str, np.ndarray]
# The cohort is sampled with plan.seed + this, never with the seed of the initial weights.
_SAMPLING_SEED_OFFSET = 7919


@dataclass(frozen=True)
class SitePrivacy:
    """A site's mechanism for one study, fixed by the plan when the site reserves it and
    kept in its ledger for every later round: sample rate and noise multiplier."""

    sample_rate: float
    noise_multiplier: float


@dataclass(frozen=True)
class LocalRelease:
    """What one round produced at a site: the arrays it sends, the units it released this
    round and in the whole study (DP-SGD steps, table stages), and ε so far."""

    arrays: dict[str, np.ndarray]
    steps: int
    steps_total: int
    epsilon: float


class SiteRecords(Protocol):
    """A site's validated records as the node holds them (`node.site_data.SiteData`)."""

    name: str
    encoding: TableEncoding
    encoded: np.ndarray
    parsed: pd.DataFrame


def sampling_seed(plan: StudyPlan) -> int:
    """The seed a family samples the cohort with: public, and apart from the plan's seed."""
    return plan.seed + _SAMPLING_SEED_OFFSET


class GeneratorFamily(ABC):
    """One generator family. Subclasses set the class attributes and implement the rest."""

    name: ClassVar[str]
    # One line for `--generator`'s help.
    summary: ClassVar[str]
    # The manifest's words for the mechanism each site runs.
    mechanism: ClassVar[str]
    # The manifest's and report's words for how the coordinator makes the cohort from the
    # sites' releases (post-processing, which no DP guarantee needs more of).
    cohort_model: ClassVar[str]
    # The largest |value| an honest global array or update holds: SecAgg+'s quantisation
    # range, and the bound past which a node refuses a global model.
    secure_range: ClassVar[float]
    # The rounds a study of this family runs when the operator does not say (None: the
    # plan's default).
    default_rounds: ClassVar[int | None] = None

    def plan_problems(self, plan: StudyPlan) -> list[str]:
        """The family's own rules `plan` breaks (the plan's general rules are its own)."""
        return []

    def join_problem(self, plan: StudyPlan, server_round: int) -> str | None:
        """Why a site must not join a study it first hears of in `server_round`, or None."""
        return None

    @abstractmethod
    def global_arrays(self, schema: Schema, plan: StudyPlan) -> dict[str, np.ndarray]:
        """The global arrays a study starts from: their names, shapes and dtypes are
        the only ones a node accepts or a coordinator averages."""

    @abstractmethod
    def model_values(self, schema: Schema, plan: StudyPlan) -> int:
        """How many values `global_arrays` would hold, counted without allocating them:
        a node checks a plan against its cap on model size before anything exists."""

    @abstractmethod
    def site_privacy(self, plan: StudyPlan, schema: Schema) -> SitePrivacy:
        """Every site's mechanism for the study, from the plan and the public schema."""

    @abstractmethod
    def epsilon(self, plan: StudyPlan, schema: Schema, released: int,
                evaluated: bool = False) -> float:
        """ε of a site after `released` units of the study (and the plan's evaluation
        release when `evaluated`); inf without DP. The same at every site."""

    def exposed_epsilon(self, plan: StudyPlan, schema: Schema) -> float | None:
        """When sites add only shares of one central noise (under secure aggregation): the
        ε of one site's whole release, evaluation included, if the coordinator saw it
        alone (secure aggregation failed, or more sites colluded than the plan allows).
        None when every site adds its full noise, so its release is as private alone."""
        return None

    def minimum_site_records(self, plan: StudyPlan) -> int:
        """The smallest site for which `plan` is worth joining (a public utility rule)."""
        return MIN_SITE_RECORDS

    def too_small(self, plan: StudyPlan, n_records: int) -> str:
        """Why a site of `n_records` (at least `MIN_SITE_RECORDS`, below the minimum)
        gains little from `plan`, in a data steward's words."""
        return (f"with {n_records} records, this plan's noise would outweigh what the "
                "site's records can say")

    @abstractmethod
    def release(self, schema: Schema, site: SiteRecords, plan: StudyPlan,
                privacy: SitePrivacy, released_before: int, received: Arrays
                ) -> LocalRelease:
        """The site's DP release for this round, given the global arrays it received and
        the units it released before. Runs at the node: the only method that reads
        records."""

    @abstractmethod
    def update_problem(self, plan: StudyPlan, server_round: int, sent: Arrays, reply: Arrays,
                       slack: float = 0.0) -> str | None:
        """Why `reply` cannot be an honest site's answer to `sent` in `server_round`, or
        None (`slack`: extra error allowed, e.g. SecAgg+'s quantisation)."""

    def average_problem(self, plan: StudyPlan, server_round: int, sent: Arrays,
                        average: Arrays, slack: float) -> str | None:
        """Why a secure average (whose parts the coordinator never sees) cannot be an
        average of honest answers, or None."""
        return self.update_problem(plan, server_round, sent, average, slack)

    @abstractmethod
    def sample(self, schema: Schema, plan: StudyPlan, final: Arrays,
               round_arrays: Callable[[int], Arrays]) -> pd.DataFrame:
        """`plan.rows` synthetic records decoded to the schema's columns, from the final
        global arrays (`round_arrays(r)`: the global arrays after round r, for a family
        whose sampler needs an earlier round). Post-processing of DP outputs only."""
