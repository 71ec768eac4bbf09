"""The coordinator accepts only whitelisted, in-range scores from federated evaluation."""

import math

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from coordinator.federated_evaluation import read_reply
from protocols import messages as keys


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _reply(scores=None, site=None, extra=None):
    request = Message(content=RecordDict({}), dst_node_id=1, message_type="evaluate")
    content = {keys.SCORES: MetricRecord(scores if scores is not None else
                                         dict.fromkeys(keys.REPLY_SCORES, 0.5)),
               keys.SITE: ConfigRecord(site or {keys.SITE_NAME: "hospital-01"})}
    content.update(extra or {})
    return Message(content=RecordDict(content), reply_to=request)


def test_a_reply_with_exactly_the_whitelisted_scores_is_accepted():
    scores = {**dict.fromkeys(keys.REPLY_SCORES, 0.5), "tstr_ratio": math.nan,
              "bias_flags": 3.0}
    site, values, problem = read_reply(_reply(scores))
    assert problem is None and site == "hospital-01"
    assert values["bias_flags"] == 3.0 and math.isnan(values["tstr_ratio"])


@pytest.mark.parametrize("reply, why", [
    (lambda: _reply({**dict.fromkeys(keys.REPLY_SCORES, 0.5), "n_rows": 120.0}),
     "whitelisted"),
    (lambda: _reply({k: 0.5 for k in keys.REPLY_SCORES[1:]}), "whitelisted"),
    (lambda: _reply({**dict.fromkeys(keys.REPLY_SCORES, 0.5), "column_shapes": 1.7}),
     "outside"),
    (lambda: _reply({**dict.fromkeys(keys.REPLY_SCORES, 0.5), "pairwise": -0.1}), "outside"),
    (lambda: _reply(site={keys.SITE_NAME: "h", "rows": "120"}), "more than the site's name"),
    (lambda: _reply(extra={"records": ConfigRecord({"x": "1"})}), "unexpected records"),
])
def test_a_reply_with_anything_else_is_dropped(reply, why):
    _, _, problem = read_reply(reply())
    assert problem is not None and why in problem
