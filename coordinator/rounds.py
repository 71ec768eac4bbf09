"""The study's training rounds over the message API, numbered as the study's rounds.

A resumed study starts at the round after its last checkpoint, and every node
sees the study's own round number (its ledger charges each round once by
that number). Each round waits at most `timeout` seconds for the sites'
replies; a site that does not answer in time (or whose node died) is left
out of that round, and the round goes on if `min_sites` remain.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from coordinator.strategy import StudyStrategy

AfterRound = Callable[[int, ArrayRecord], None]


def run_rounds(grid: Grid, strategy: StudyStrategy, arrays: ArrayRecord,
               plan_record: ConfigRecord, first_round: int, last_round: int,
               timeout: float, after_round: AfterRound) -> ArrayRecord:
    """Train rounds `first_round`..`last_round` from `arrays`; return the final model."""
    for server_round in range(first_round, last_round + 1):
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(dict(plan_record)),
                                            grid)
        replies = grid.send_and_receive(messages, timeout=timeout)
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is None:  # aggregate_train raises first when too few sites answered
            raise RuntimeError(f"round {server_round} produced no model")
        arrays = aggregated
        after_round(server_round, arrays)
    return arrays
