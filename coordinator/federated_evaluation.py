"""Federated evaluation: the sites release noisy count tables of their records, once.

After the release, when the plan budgeted one (`evaluation-epsilon` > 0), the
coordinator sends every node the cohort's CSV bytes and its signed manifest;
a node that took part in this study checks the signature against its own kit,
charges the release on its ledger and replies with its noisy evaluation tables
(`protocols.evaluation.release`). A reply with anything else, other tables,
other shapes, or values that are not finite whole numbers, is dropped and
logged, like a bad training update. The coordinator sums the tables and
computes every score from the sum (`protocols.evaluation.federated`): it never
sees a record, a site's size or a score computed on one site's exact records.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from coordinator.strategy import record_problem
from protocols import messages as keys
from protocols.evaluation import study_report
from protocols.evaluation.federated import federated_summary
from protocols.evaluation.release import EvaluationLayout, evaluation_layout
from protocols.evaluation.report.html import write_report
from protocols.plan import StudyPlan
from protocols.schema import Schema

log = logging.getLogger(__name__)
REPORT_NAME = "report.html"
TIMEOUT_S = 600.0
Tables = dict[str, np.ndarray]


def evaluate_at_sites(grid: Grid, schema: Schema, plan: StudyPlan, cohort_csv: bytes,
                      manifest_bytes: bytes, timeout: float = TIMEOUT_S) -> dict[str, Tables]:
    """Send the cohort and its manifest to every connected node; each valid reply's
    noisy tables by site."""
    content = RecordDict({
        keys.COHORT: ConfigRecord({keys.COHORT_CSV: cohort_csv,
                                   keys.COHORT_MANIFEST: manifest_bytes}),
        keys.PLAN: ConfigRecord({**plan.to_config(), keys.SCHEMA_SHA256: schema.sha256}),
    })
    outgoing = [Message(content=content, dst_node_id=node, message_type=MessageType.EVALUATE)
                for node in grid.get_node_ids()]
    layout = evaluation_layout(schema)
    tables: dict[str, Tables] = {}
    for reply in grid.send_and_receive(outgoing, timeout=timeout):
        site, values, problem = read_reply(reply, layout)
        if not problem and site in tables:
            problem = f"a second reply for site {site!r}; its first reply is kept"
        if problem:
            log.warning("federated evaluation: reply dropped: %s", problem)
            continue
        tables[site] = values
    return tables


def read_reply(reply: Message, layout: EvaluationLayout) -> tuple[str, Tables, str | None]:
    """(site, tables, problem); `problem` is None only for a reply that holds exactly
    the layout's tables, each of its shape, every value a finite whole number."""
    if reply.has_error():
        return "", {}, f"the node answered with an error: {reply.error.reason}"
    content = reply.content
    problem = record_problem(content, {keys.EVALUATION_TABLES: ArrayRecord,
                                       keys.SITE: ConfigRecord})
    if problem:
        return "", {}, problem
    site = content[keys.SITE]
    if set(site.keys()) != keys.EVALUATION_SITE:
        return "", {}, "the site record holds more than the site's name"
    name = site[keys.SITE_NAME]
    if not isinstance(name, str) or not name.strip():
        return "", {}, "the site name is not a non-empty text"
    shapes = layout.table_shapes()
    arrays = content[keys.EVALUATION_TABLES]
    if set(arrays.keys()) != set(shapes):
        return "", {}, "the tables are not exactly the evaluation layout's"
    values: Tables = {}
    for table_name, array in arrays.items():
        value = array.numpy()
        if tuple(value.shape) != tuple(shapes[table_name]) or value.dtype != np.float64:
            return "", {}, f"table {table_name} has shape {value.shape} / {value.dtype}"
        if not (np.all(np.isfinite(value)) and np.array_equal(value, np.rint(value))):
            return "", {}, f"table {table_name} holds values that are not whole numbers"
        values[table_name] = value
    return name, values, None


def write_study_report(out_dir: Path, schema: Schema, plan: StudyPlan, manifest: Mapping,
                       site_tables: Mapping[str, Tables], cohort: pd.DataFrame) -> Path:
    summary = federated_summary(evaluation_layout(schema), plan, site_tables, cohort)
    report = study_report(schema, manifest, summary, len(cohort))
    html, _ = write_report(report, out_dir / REPORT_NAME)
    return html
