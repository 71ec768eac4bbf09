"""The coordinator's FedAvg: which updates it accepts, and which rounds each site is in."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from coordinator.strategy import StudyStrategy
from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.plan import StudyPlan

PLAN = StudyPlan(epsilon=2.0, rounds=3, min_sites=2)


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _reference():
    return ArrayRecord({"w": Array(np.zeros((2, 3), np.float32))})


def _update(site, value=1.0, epsilon=1.0, arrays=None):
    request = Message(content=RecordDict({}), dst_node_id=1, message_type="train")
    content = RecordDict({
        keys.ARRAYS: arrays or ArrayRecord({"w": Array(np.full((2, 3), value, np.float32))}),
        keys.METRICS: MetricRecord({keys.WEIGHT: 1.0, keys.STEPS: 5, keys.STEPS_TOTAL: 5,
                                    keys.EPSILON_SPENT: epsilon}),
        keys.SITE: ConfigRecord({keys.SITE_NAME: site})})
    return Message(content=content, reply_to=request)


def test_each_site_is_recorded_in_exactly_the_rounds_its_update_was_averaged_into():
    strategy = StudyStrategy(PLAN, _reference())
    average, _ = strategy.aggregate_train(1, [_update("a", 1.0), _update("b", 3.0),
                                              _update("c", 5.0)])
    assert np.allclose(average["w"].numpy(), 3.0)
    strategy.aggregate_train(2, [_update("a"), _update("b")])  # c's node died
    assert strategy.contributions == {"a": [1, 2], "b": [1, 2], "c": [1]}
    assert strategy.contributors == ["a", "b", "c"]


@pytest.mark.parametrize("bad, why", [
    (lambda: _update("c", np.nan), "NaN"),
    (lambda: _update("c", arrays=ArrayRecord({"w": Array(np.zeros(4, np.float32))})), "shape"),
    (lambda: _update("c", epsilon=2.5), "exceeds the plan"),
    (lambda: _update("a", 9.0), "second update"),
])
def test_a_bad_update_is_left_out_and_logged(bad, why, caplog):
    strategy = StudyStrategy(PLAN, _reference())
    average, _ = strategy.aggregate_train(1, [_update("a", 1.0), _update("b", 3.0), bad()])
    assert np.allclose(average["w"].numpy(), 2.0)  # only a and b
    assert why in caplog.text
    assert set(strategy.contributions) == {"a", "b"}


def test_a_round_with_too_few_usable_updates_stops_the_study():
    strategy = StudyStrategy(PLAN, _reference())
    with pytest.raises(FedsynthError, match="only 1 site update"):
        strategy.aggregate_train(1, [_update("a"), _update("b", np.inf)])
