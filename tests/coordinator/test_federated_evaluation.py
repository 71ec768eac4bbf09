"""The coordinator accepts only the evaluation layout's noisy tables, and scores them."""

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from coordinator.federated_evaluation import read_reply
from protocols import messages as keys
from protocols.evaluation.federated import (FEDERATED_SCORES, federated_scores, federated_summary,
                                            pooled, pooled_noise_sd)
from protocols.evaluation.release import evaluation_layout, noisy_evaluation_tables
from protocols.plan import StudyPlan


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


@pytest.fixture(scope="module")
def layout(demo_schema):
    return evaluation_layout(demo_schema)


def _tables(layout, value=3.0):
    return {name: np.full(shape, value) for name, shape in layout.table_shapes().items()}


def _reply(tables, site=None, extra=None):
    request = Message(content=RecordDict({}), dst_node_id=1, message_type="evaluate")
    content = {keys.EVALUATION_TABLES: ArrayRecord(
                   {k: Array(np.ascontiguousarray(v)) for k, v in tables.items()}),
               keys.SITE: ConfigRecord(site or {keys.SITE_NAME: "hospital-01"})}
    content.update(extra or {})
    return Message(content=RecordDict(content), reply_to=request)


def test_a_reply_with_exactly_the_layouts_tables_is_accepted(layout):
    site, values, problem = read_reply(_reply(_tables(layout, -2.0)), layout)
    assert problem is None and site == "hospital-01"
    assert set(values) == set(layout.table_shapes())


@pytest.mark.parametrize("change, why", [
    (lambda t: {k: v for k, v in list(t.items())[1:]}, "not exactly the evaluation layout"),
    (lambda t: {**t, "n_rows": np.array([120.0])}, "not exactly the evaluation layout"),
    (lambda t: {**t, "1|sex": np.full(3, 3.0)}, "has shape"),
    (lambda t: {**t, "1|sex": np.full(2, 3, dtype=np.int64)}, "has shape"),
    (lambda t: {**t, "1|sex": np.array([0.5, 3.0])}, "not whole numbers"),
    (lambda t: {**t, "1|sex": np.array([np.nan, 3.0])}, "not whole numbers"),
])
def test_a_reply_with_anything_else_is_dropped(layout, change, why):
    _, _, problem = read_reply(_reply(change(_tables(layout))), layout)
    assert problem is not None and why in problem


@pytest.mark.parametrize("reply, why", [
    (lambda t: _reply(t, site={keys.SITE_NAME: "h", "rows": "120"}), "more than the site's"),
    (lambda t: _reply(t, site={keys.SITE_NAME: b"hospital"}), "site name"),
    (lambda t: _reply(t, extra={"scores": MetricRecord({"column_shapes": 0.9})}),
     "unexpected records"),
])
def test_a_reply_with_other_records_is_dropped(layout, reply, why):
    _, _, problem = read_reply(reply(_tables(layout)), layout)
    assert problem is not None and why in problem


def test_scores_of_exact_tables_of_the_cohort_itself_are_perfect(layout, demo_parsed):
    cohort = pd.concat(demo_parsed.values(), ignore_index=True)
    exact = layout.counts(cohort, cohort)
    scores = federated_scores(layout, exact, layout.description_counts(cohort),
                              {name: 0.0 for name in exact})
    assert scores["column_shapes"] == pytest.approx(1.0)
    assert scores["pairwise"] == pytest.approx(1.0)
    assert scores["km_distance"] == pytest.approx(0.0)
    assert scores["bias_flags"] == 0
    assert 0.5 < scores["tstr_auc"] <= 1.0  # a model of the cohort ranks its own records


def test_the_report_gives_pooled_scores_beside_a_perfect_cohort_under_the_same_noise(
        layout, demo_parsed):
    plan = StudyPlan(evaluation_epsilon=1.0)
    cohort = pd.concat(demo_parsed.values(), ignore_index=True)
    sites = {name: noisy_evaluation_tables(layout, plan, parsed, cohort)
             for name, parsed in demo_parsed.items()}
    summary = federated_summary(layout, plan, sites, cohort)
    assert sorted(summary["sites"]) == sorted(demo_parsed)
    assert set(summary["aggregate"]) == set(FEDERATED_SCORES)
    shapes = summary["aggregate"]["column_shapes"]
    assert abs(shapes["pooled"] - shapes["perfect_cohort"]) < 0.05  # the same records
    assert "once and charged to its privacy ledger" in summary["note"]
    sd = pooled_noise_sd(layout, plan, len(sites))
    one = pooled_noise_sd(layout, plan, 1)
    assert all(sd[k] == pytest.approx(one[k] * np.sqrt(len(sites))) for k in sd)
    assert set(pooled(sites)) == set(layout.table_shapes())
