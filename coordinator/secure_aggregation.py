"""Study rounds under Flower's SecAgg+: the coordinator only ever holds the sum.

Flower 1.42 (like 1.41) offers SecAgg+ only in its legacy workflow API, so a study with
`secure-aggregation = true` runs its rounds with `DefaultWorkflow` whose fit
step is `SecAggPlusWorkflow`, a `LegacyContext` and a legacy FedAvg
(`SecureFedAvg`). The workflow unmasks only the sites' weighted average; what
reaches the strategy is that one vector (handed over once per surviving site,
the same object each time, for the legacy `aggregate_fit` signature). No
site's update, ε or name reaches the coordinator: per-site privacy reports
travel in a separate message. The quantisation bounds and the Shamir
threshold are the contract's (`protocols.privacy.secure_aggregation`), and so is the
expansion of the masks from their seeds, which replaces Flower's 32-bit one in the
workflow (the nodes replace it in their mod).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.common import (FitRes, NDArrays, Parameters, Scalar, ndarrays_to_parameters,
                         parameters_to_ndarrays)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from coordinator.strategy import wait_for_sites
from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.privacy import secure_aggregation as contract

log = logging.getLogger(__name__)
AfterRound = Callable[[int, ArrayRecord, list[int]], None]


class SecureFedAvg(FedAvg):
    """Legacy FedAvg that accepts only the combined, unmasked average.

    It sends every site the plan with the study's round number and the global
    model's array names, and checks the average it gets: one vector for all
    results, finite, within the quantisation range, with the global model's
    layers (restored by position and cast back to their dtype, since
    dequantisation yields float64). Each accepted average is kept in `latest`.
    """

    def __init__(self, reference: ArrayRecord, plan_record: ConfigRecord, *,
                 first_round: int, min_sites: int, clipping_range: float) -> None:
        self._names = list(reference.keys())
        self._layers = [(a.numpy().shape, a.numpy().dtype) for a in reference.values()]
        self._config = {**dict(plan_record), contract.ARRAY_NAMES: self._names}
        self._offset = first_round - 1
        self._min_sites = min_sites
        self._bound = clipping_range
        self._plan = StudyPlan.from_config(dict(plan_record))
        self.latest = reference
        self.aggregated_round = 0
        self.round_nodes: dict[int, list[int]] = {}  # study round -> nodes in its sum
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=min_sites,
                         min_evaluate_clients=min_sites, min_available_clients=min_sites,
                         on_fit_config_fn=self._fit_config, accept_failures=True,
                         initial_parameters=ndarrays_to_parameters(
                             [a.numpy() for a in reference.values()]))

    def study_round(self, workflow_round: int) -> int:
        """The study's round number for the workflow's (which restarts at 1)."""
        return self._offset + workflow_round

    def _fit_config(self, workflow_round: int) -> dict[str, Scalar]:
        config = {**self._config, keys.SERVER_ROUND: self.study_round(workflow_round)}
        return cast(dict[str, Scalar], config)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        study_round = self.study_round(server_round)
        for failure in failures:
            log.warning("round %d: a site dropped out of secure aggregation: %s",
                        study_round, failure)
        if len(results) < self._min_sites:
            raise FedsynthError(f"Round {study_round}: only {len(results)} site(s) completed "
                                f"secure aggregation, fewer than the plan's min-sites "
                                f"({self._min_sites}); the study stops here.")
        combined = {id(fitres.parameters) for _, fitres in results}
        if len(combined) != 1:
            raise FedsynthError(f"Round {study_round}: the strategy was handed "
                                f"{len(combined)} different updates instead of their "
                                "secure sum; refusing to aggregate individual updates.")
        arrays = self._checked(study_round, parameters_to_ndarrays(results[0][1].parameters))
        self.latest = ArrayRecord({name: Array(a) for name, a in zip(self._names, arrays)})
        self.aggregated_round = server_round
        self.round_nodes[study_round] = sorted(int(proxy.node_id) for proxy, _ in results)
        return ndarrays_to_parameters(arrays), {}

    def _checked(self, study_round: int, arrays: NDArrays) -> NDArrays:
        """The average as the global model's arrays, or FedsynthError if it is not."""
        if len(arrays) != len(self._layers):
            raise FedsynthError(f"Round {study_round}: the secure average has {len(arrays)} "
                                f"layers; the global model has {len(self._layers)}.")
        problem = contract.out_of_range(zip(self._names, arrays, strict=True), self._bound)
        if problem:
            raise FedsynthError(f"Round {study_round}: the secure average is refused: "
                                f"{problem}.")
        out = []
        for name, value, (shape, dtype) in zip(self._names, arrays, self._layers, strict=True):
            if tuple(value.shape) != tuple(shape):
                raise FedsynthError(f"Round {study_round}: layer {name} of the secure "
                                    f"average has shape {value.shape}, not {shape}.")
            out.append(np.asarray(value, dtype=dtype))
        self._check_average(study_round, out)
        return out

    def _check_average(self, study_round: int, average: NDArrays) -> None:
        """The average must be one the family allows of honest updates (the VAE: no weight
        moved further than one honest round can, plus two quantisation steps): beyond
        that, a site sent a hostile update, which SecAgg+ hides, so the study stops."""
        sent = {name: array.numpy() for name, array in self.latest.items()}
        step = 2 * self._bound / contract.QUANTIZATION_RANGE
        problem = family_for(self._plan).average_problem(
            self._plan, study_round, sent, dict(zip(self._names, average, strict=True)),
            slack=2 * step)
        if problem:
            raise FedsynthError(f"Round {study_round}: the secure average is refused: "
                                f"{problem}; one of the summed updates cannot be honest, and "
                                "secure aggregation does not say whose. The study stops here.")


def secure_rounds(grid: Grid, context: Context, *, plan_record: ConfigRecord,
                  initial: ArrayRecord, first_round: int, last_round: int, min_sites: int,
                  after_round: AfterRound, timeout: float) -> ArrayRecord:
    """Run study rounds `first_round`..`last_round` under SecAgg+ from `initial`.

    `after_round(study_round, average, node_ids)` runs after every round with
    the nodes whose updates are in the sum (checkpoints, contributions);
    `timeout` bounds the wait for `min_sites` nodes and each of SecAgg+'s four
    exchanges per round. Returns the last round's average. A round that SecAgg+ halts (too many dropouts for
    the threshold) or that leaves fewer than `min_sites` stops the study with
    FedsynthError rather than silently keeping the old weights.
    """
    if not 1 <= first_round <= last_round:
        raise FedsynthError(f"Secure rounds {first_round}..{last_round} are not a valid range.")
    sys.modules[SecAggPlusWorkflow.__module__].pseudo_rand_gen = contract.expand_mask
    plan = StudyPlan.from_config(dict(plan_record))
    ranges = contract.secure_ranges(family_for(plan).secure_range)
    strategy = SecureFedAvg(initial, plan_record, first_round=first_round, min_sites=min_sites,
                            clipping_range=ranges.clipping_range)
    secagg = SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=contract.RECONSTRUCTION_FRACTION,
        max_weight=ranges.max_weight, clipping_range=ranges.clipping_range,
        quantization_range=contract.QUANTIZATION_RANGE,
        modulus_range=contract.MODULUS_RANGE, timeout=timeout)

    legacy = LegacyContext(context, config=ServerConfig(num_rounds=last_round - first_round + 1),
                           strategy=strategy)
    try:
        fit_round = _fit_round(secagg, strategy, after_round, min_sites, timeout)
        DefaultWorkflow(fit_workflow=fit_round)(grid, legacy)
    finally:
        # The workflow keeps its own copy of the model in the app's state; drop it.
        context.state.array_records.pop(MAIN_PARAMS_RECORD, None)
        context.state.config_records.pop(MAIN_CONFIGS_RECORD, None)
    return strategy.latest


def _fit_round(secagg: SecAggPlusWorkflow, strategy: SecureFedAvg, after_round: AfterRound,
               min_sites: int, timeout: float) -> Callable[[Grid, Context], None]:
    """One round's fit step: SecAgg+, a check that it produced an average, the callback."""

    def fit_round(grid: Grid, context: Context) -> None:
        legacy = cast(LegacyContext, context)
        wait_for_sites(grid, min_sites, timeout)  # the legacy sampler would wait a day
        _refuse_too_many_sites(legacy)
        secagg(grid, legacy)
        workflow_round = int(legacy.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        study_round = strategy.study_round(workflow_round)
        if strategy.aggregated_round != workflow_round:
            raise FedsynthError(f"Round {study_round}: secure aggregation halted (too many "
                                "sites dropped out to unmask the sum); the study stops here.")
        after_round(study_round, strategy.latest, strategy.round_nodes[study_round])

    return fit_round


def _refuse_too_many_sites(legacy: LegacyContext) -> None:
    """Beyond `MAX_SITES` the sum of quantised updates could wrap around the modulus."""
    available = legacy.client_manager.num_available()
    if available > contract.MAX_SITES:
        raise FedsynthError(f"{available} sites are connected; secure aggregation as "
                            f"configured sums at most {contract.MAX_SITES} without overflow.")
