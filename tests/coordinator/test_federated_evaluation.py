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
    (lambda: _reply({**dict.fromkeys(keys.REPLY_SCORES, 0.5), "column_shapes": [0.5, 0.6]}),
     "not a number"),
    (lambda: _reply(site={keys.SITE_NAME: "h", "rows": "120"}), "more than the site's name"),
    (lambda: _reply(site={keys.SITE_NAME: b"hospital"}), "site name"),
    (lambda: _reply(extra={"records": ConfigRecord({"x": "1"})}), "unexpected records"),
])
def test_a_reply_with_anything_else_is_dropped(reply, why):
    _, _, problem = read_reply(reply())
    assert problem is not None and why in problem


@pytest.fixture
def site(tmp_path, demo_registry, demo_schema):
    from node.site_data import load_site
    demo_registry.sites["hospital-01"].to_csv(tmp_path / "hospital-01.csv", index=False)
    return load_site(tmp_path / "hospital-01.csv", demo_schema)


def test_a_site_returns_exactly_the_whitelisted_scores(site, demo_registry, demo_schema):
    from node.site_evaluation import score_cohort
    cohort = demo_registry.sites["hospital-02"].to_csv(index=False).encode()
    scores = score_cohort(demo_schema, site, cohort)
    assert tuple(scores) == keys.REPLY_SCORES
    assert all(type(v) is float for v in scores.values())


@pytest.mark.parametrize("cohort", [b"", b"age_at_diagnosis\n42\n"])
def test_a_site_refuses_a_bad_cohort_naming_the_cohort_not_a_temporary_file(
        site, demo_schema, cohort):
    from node.site_evaluation import score_cohort
    from protocols.errors import RecordError
    with pytest.raises(RecordError, match="released cohort") as caught:
        score_cohort(demo_schema, site, cohort)
    assert "fedsynth-eval-" not in str(caught.value)
