"""The privacy reports sent after a secure study: what the coordinator accepts of them."""

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from coordinator.privacy_reports import _read
from protocols import messages as keys
from protocols.plan import StudyPlan

PLAN = StudyPlan(epsilon=2.0, rounds=3, secure_aggregation=True)


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _report(site="a", **changes):
    values = {keys.EPSILON_SPENT: 1.5, keys.STEPS_TOTAL: 60, keys.ROUNDS: [1, 2, 3],
              keys.SYNTHETIC_INPUT: 0.0, **changes}
    request = Message(content=RecordDict({}), dst_node_id=1, message_type="query")
    content = RecordDict({keys.REPORT: MetricRecord(values),
                          keys.SITE: ConfigRecord({keys.SITE_NAME: site,
                                                   keys.LEDGER_HEAD: "cd" * 32})})
    return Message(content=content, reply_to=request)


def test_a_sound_report_gives_the_sites_spend_and_synthetic_flag():
    name, spent, problem = _read(_report(**{keys.SYNTHETIC_INPUT: 1.0}), PLAN)
    assert (name, spent.epsilon, spent.steps, spent.synthetic_input, problem) == (
        "a", 1.5, 60, True, None)


@pytest.mark.parametrize("changes, why", [
    ({keys.EPSILON_SPENT: [1.0]}, "epsilon-spent is not a single number"),
    ({keys.ROUNDS: [1.0, 2.5]}, "rounds is not a list of whole numbers"),
    ({keys.SYNTHETIC_INPUT: 2.0}, "synthetic-input 2.0 is not 0 or 1"),
    ({keys.EPSILON_SPENT: 2.5}, "outside [0, 2.0]"),
    ({keys.ROUNDS: [4]}, "not rounds of the plan"),
])
def test_a_malformed_report_is_dropped_with_its_reason_not_a_crash(changes, why):
    assert why in _read(_report(**changes), PLAN)[2]
