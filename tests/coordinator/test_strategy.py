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


def _update(site, value=0.1, epsilon=1.0, arrays=None, weight=1.0, synthetic=0.0):
    request = Message(content=RecordDict({}), dst_node_id=1, message_type="train")
    content = RecordDict({
        keys.ARRAYS: arrays or ArrayRecord({"w": Array(np.full((2, 3), value, np.float32))}),
        keys.METRICS: MetricRecord({keys.WEIGHT: weight, keys.STEPS: 5, keys.STEPS_TOTAL: 5,
                                    keys.EPSILON_SPENT: epsilon,
                                    keys.SYNTHETIC_INPUT: synthetic}),
        keys.SITE: ConfigRecord({keys.SITE_NAME: site, keys.LEDGER_HEAD: "ab" * 32})})
    return Message(content=content, reply_to=request)


def test_each_site_is_recorded_in_exactly_the_rounds_its_update_was_averaged_into():
    strategy = StudyStrategy(PLAN, _reference())
    average, _ = strategy.aggregate_train(1, [_update("a", 0.1), _update("b", 0.2),
                                              _update("c", 0.3)])
    assert np.allclose(average["w"].numpy(), 0.2)
    strategy.aggregate_train(2, [_update("a"), _update("b")])  # c's node died
    assert strategy.contributions == {"a": [1, 2], "b": [1, 2], "c": [1]}
    assert strategy.contributors == ["a", "b", "c"]


@pytest.mark.parametrize("bad, why", [
    (lambda: _update("c", np.nan), "NaN"),
    (lambda: _update("c", arrays=ArrayRecord({"w": Array(np.zeros(4, np.float32))})), "shape"),
    (lambda: _update("c", epsilon=2.5), "exceeds the plan"),
    (lambda: _update("a", 0.05), "second update"),
    # 20 Adam steps at learning rate 0.02 move no weight by more than 0.42
    (lambda: _update("c", 5.0), "moved by 5, beyond the 0.4239"),
    (lambda: _update("c", -0.5), "moved by 0.5, beyond"),
    (lambda: _update("c", weight=40.0), "FedAvg weight 40 is not 1"),
    (lambda: _update("c", synthetic=0.5), "synthetic-input 0.5 is not 0 or 1"),
    (lambda: _update("c", weight=[1.0]), "weight is not a single number"),
    (lambda: _update("c", arrays=MetricRecord({"w": 1.0})), "record arrays is a MetricRecord"),
])
def test_a_bad_update_is_left_out_and_logged(bad, why, caplog):
    strategy = StudyStrategy(PLAN, _reference())
    average, _ = strategy.aggregate_train(1, [_update("a", 0.1), _update("b", 0.3), bad()])
    assert np.allclose(average["w"].numpy(), 0.2)  # only a and b
    assert why in caplog.text
    assert set(strategy.contributions) == {"a", "b"}


def test_a_round_with_too_few_usable_updates_stops_the_study():
    strategy = StudyStrategy(PLAN, _reference())
    with pytest.raises(FedsynthError, match="only 1 site update"):
        strategy.aggregate_train(1, [_update("a"), _update("b", np.inf)])


def test_updates_are_bounded_against_the_global_model_of_their_own_round():
    strategy = StudyStrategy(PLAN, _reference())
    moved = ArrayRecord({"w": Array(np.full((2, 3), 0.4, np.float32))})
    strategy._sent = {"w": moved["w"].numpy()}  # what configure_train keeps for round 2
    average, _ = strategy.aggregate_train(2, [_update("a", 0.7), _update("b", 0.1)])
    assert np.allclose(average["w"].numpy(), 0.4)  # both within 0.42 of 0.4


@pytest.mark.parametrize("weight, accepted", [(1.0, True), (2.0, False), (40.0, False),
                                              (0.5, False)])
def test_every_site_weighs_one(weight, accepted):
    """A weight by size would reveal the size: any other weight is a bad reply."""
    strategy = StudyStrategy(StudyPlan(epsilon=2.0, rounds=3, min_sites=1), _reference())
    strategy.aggregate_train(1, [_update("a", weight=1.0), _update("b", weight=weight)])
    assert ("b" in strategy.contributions) == accepted


def test_a_site_that_trained_on_a_synthetic_cohort_is_recorded_as_such():
    strategy = StudyStrategy(PLAN, _reference())
    strategy.aggregate_train(1, [_update("a"), _update("b", synthetic=1.0)])
    assert (strategy.sites["a"].synthetic_input, strategy.sites["b"].synthetic_input) == (
        False, True)


def test_a_site_once_trained_on_a_synthetic_cohort_stays_recorded_as_such():
    strategy = StudyStrategy(PLAN, _reference())
    strategy.aggregate_train(1, [_update("a", synthetic=1.0), _update("b")])
    strategy.aggregate_train(2, [_update("a"), _update("b")])  # a's node switched files
    assert strategy.sites["a"].synthetic_input and not strategy.sites["b"].synthetic_input
