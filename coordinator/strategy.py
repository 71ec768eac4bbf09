"""FedAvg over the generator's weights, with the checks a release needs.

Before averaging, every reply is checked: its arrays must have exactly the
global model's names, shapes and dtypes, be finite and lie within what one
honest round of the plan can change (the family's `update_problem`); its scalars
must be the whitelisted ones, its FedAvg weight the one the plan allows, and
the ε it reports within the plan. A reply that fails is dropped and logged;
the round goes on if at least `min_sites` remain, and the study stops
otherwise. The strategy remembers, per site, the last ε and steps reported
and the rounds it contributed to: the sites of the final model are exactly
those with at least one round.

A round waits for at least `min_sites` connected nodes, but not forever:
after `wait_s` seconds the study stops with a clear message.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.privacy.ledger import is_head
from protocols.release.manifest import SitePrivacySpent

log = logging.getLogger(__name__)


class StudyStrategy(FedAvg):
    """FedAvg with reply validation and a per-site privacy record."""

    def __init__(self, plan: StudyPlan, reference: ArrayRecord, wait_s: float = 600.0,
                 sites: Mapping[str, SitePrivacySpent] | None = None,
                 contributions: Mapping[str, list[int]] | None = None) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0,
                         min_train_nodes=plan.min_sites, min_available_nodes=plan.min_sites,
                         weighted_by_key=keys.WEIGHT)
        self.plan = plan
        self.wait_s = wait_s
        self._shapes = {name: (a.numpy().shape, a.numpy().dtype) for name, a in reference.items()}
        # The global arrays of the round in progress: replies are bounded against them.
        self._sent = {name: array.numpy() for name, array in reference.items()}
        self.sites: dict[str, SitePrivacySpent] = dict(sites or {})
        self.contributions: dict[str, list[int]] = {k: list(v)
                                                    for k, v in (contributions or {}).items()}

    @property
    def contributors(self) -> list[str]:
        """Every site whose update went into at least one round of the final model."""
        return sorted(name for name, rounds in self.contributions.items() if rounds)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        wait_for_sites(grid, self.plan.min_sites, self.wait_s)
        self._sent = {name: array.numpy() for name, array in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted, names = [], []
        for msg in replies:
            if msg.has_error():
                log.warning("round %d: node %s failed: %s", server_round,
                            msg.metadata.src_node_id, msg.error.reason)
                continue
            problem = self._reply_problem(msg, server_round)
            if not problem and str(msg.content[keys.SITE][keys.SITE_NAME]) in names:
                problem = "a second update under the same site name in this round"
            if problem:
                log.warning("round %d: update from node %s rejected: %s", server_round,
                            msg.metadata.src_node_id, problem)
                continue
            name = str(msg.content[keys.SITE][keys.SITE_NAME])
            metrics = msg.content[keys.METRICS]
            # Once a site trained on a synthetic cohort, the study did: the flag only sticks.
            earlier = name in self.sites and self.sites[name].synthetic_input
            self.sites[name] = SitePrivacySpent(float(metrics[keys.EPSILON_SPENT]),
                                                int(metrics[keys.STEPS_TOTAL]),
                                                earlier or metrics[keys.SYNTHETIC_INPUT] == 1.0,
                                                str(msg.content[keys.SITE][keys.LEDGER_HEAD]))
            accepted.append(msg)
            names.append(name)
        if len(accepted) < self.plan.min_sites:
            raise FedsynthError(f"Round {server_round}: only {len(accepted)} site update(s) "
                                f"were usable, fewer than the plan's min-sites "
                                f"({self.plan.min_sites}); the study stops here.")
        for name in names:
            self.contributions.setdefault(name, []).append(server_round)
        return super().aggregate_train(server_round, accepted)

    def _reply_problem(self, msg: Message, server_round: int) -> str | None:
        content = msg.content
        problem = record_problem(content, {keys.ARRAYS: ArrayRecord, keys.METRICS: MetricRecord,
                                           keys.SITE: ConfigRecord})
        if problem:
            return problem
        if set(content[keys.METRICS].keys()) != keys.REPLY_METRICS:
            return f"metrics {sorted(content[keys.METRICS].keys())} are not the whitelisted ones"
        problem = (site_problem(content[keys.SITE])
                   or scalar_problem(content[keys.METRICS], content[keys.SITE]))
        if problem:
            return problem
        arrays = content[keys.ARRAYS]
        if set(arrays.keys()) != set(self._shapes):
            return "weights do not match the global model's layers"
        for name, array in arrays.items():
            value = array.numpy()
            if (tuple(value.shape), value.dtype) != self._shapes[name]:
                return f"layer {name} has shape {value.shape} / {value.dtype}"
            if not np.all(np.isfinite(value)):
                return f"layer {name} holds NaN or Inf"
        metrics = content[keys.METRICS]
        problem = (family_for(self.plan).update_problem(
                       self.plan, server_round, self._sent,
                       {name: array.numpy() for name, array in arrays.items()})
                   or _weight_problem(float(metrics[keys.WEIGHT]))
                   or flag_problem(metrics[keys.SYNTHETIC_INPUT]))
        if problem:
            return problem
        epsilon = float(content[keys.METRICS][keys.EPSILON_SPENT])
        if self.plan.private and not (math.isfinite(epsilon) and epsilon <= self.plan.epsilon):
            return f"reported epsilon {epsilon} exceeds the plan's {self.plan.epsilon}"
        return None


def record_problem(content: RecordDict, expected: Mapping[str, type]) -> str | None:
    """The reply must hold exactly these records, each of its expected kind."""
    if set(content.keys()) != set(expected):
        return f"unexpected records {sorted(content.keys())}"
    for name, kind in expected.items():
        if not isinstance(content[name], kind):
            return f"record {name} is a {type(content[name]).__name__}, not a {kind.__name__}"
    return None


def site_problem(site: ConfigRecord) -> str | None:
    """The site record must hold exactly its name and its ledger's head (64 hex digits)."""
    if set(site.keys()) != keys.REPLY_SITE:
        return f"site fields {sorted(site.keys())} are not the whitelisted ones"
    if not is_head(site[keys.LEDGER_HEAD]):
        return "the ledger head is not 64 hex digits"
    return None


def scalar_problem(metrics: MetricRecord, site: ConfigRecord,
                   lists: frozenset[str] = frozenset()) -> str | None:
    """Every metric a single number (those in `lists` a list of whole numbers) and the
    site's name a string: a value of another type is a bad reply, never a crash."""
    for key, value in metrics.items():
        if key in lists:
            if not (isinstance(value, list) and all(isinstance(v, int) for v in value)):
                return f"{key} is not a list of whole numbers"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key} is not a single number"
    if not isinstance(site[keys.SITE_NAME], str):
        return "the site's name is not text"
    return None


def flag_problem(value: float) -> str | None:
    """A reply's synthetic-input flag must be exactly 0 or 1."""
    return None if value in (0.0, 1.0) else f"synthetic-input {value!r} is not 0 or 1"


def _weight_problem(weight: float) -> str | None:
    """Every site weighs the same (a weight by size would reveal the size)."""
    if weight == keys.FEDAVG_WEIGHT:
        return None
    return f"FedAvg weight {weight:g} is not {keys.FEDAVG_WEIGHT:g}, the same for every site"


def wait_for_sites(grid: Grid, min_sites: int, wait_s: float) -> None:
    """Wait until `min_sites` nodes are connected, at most `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while (connected := len(list(grid.get_node_ids()))) < min_sites:
        if time.monotonic() > deadline:
            raise FedsynthError(f"Only {connected} site(s) connected within {wait_s:g} s, "
                                f"fewer than the plan's min-sites ({min_sites}); the study "
                                "stops here. Check that the sites' nodes are running.")
        time.sleep(1.0)
