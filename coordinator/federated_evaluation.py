"""Federated evaluation: every site scores the released cohort against its own records.

After the release the coordinator sends the cohort (the CSV file it just
published, which is DP post-processing and may be shared) to every node, and
each node replies with the scalar scores of `protocols.messages.REPLY_SCORES`.
A reply with anything else, or with a score outside its range, is dropped and
logged, like a bad training update. The coordinator aggregates what remains
into the study's report; it never sees a record or a figure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from protocols import messages as keys
from protocols.evaluation import federated_summary, study_report
from protocols.report_html import write_report
from protocols.schema import Schema

log = logging.getLogger(__name__)
REPORT_NAME = "report.html"
TIMEOUT_S = 600.0
_UNBOUNDED = {"bias_flags", "tstr_ratio"}  # counts, and TSTR may beat a small site's TRTR


def evaluate_at_sites(grid: Grid, schema: Schema, cohort_csv: bytes,
                      timeout: float = TIMEOUT_S) -> dict[str, dict[str, float]]:
    """Send the cohort to every connected node; return each valid reply's scores by site."""
    content = RecordDict({
        keys.COHORT: ConfigRecord({keys.COHORT_CSV: cohort_csv}),
        keys.PLAN: ConfigRecord({keys.SCHEMA_SHA256: schema.sha256}),
    })
    outgoing = [Message(content=content, dst_node_id=node, message_type=MessageType.EVALUATE)
                for node in grid.get_node_ids()]
    scores: dict[str, dict[str, float]] = {}
    for reply in grid.send_and_receive(outgoing, timeout=timeout):
        site, values, problem = read_reply(reply)
        if not problem and site in scores:
            problem = f"a second reply for site {site!r}; its first reply is kept"
        if problem:
            log.warning("federated evaluation: reply dropped: %s", problem)
            continue
        scores[site] = values
    return scores


def read_reply(reply: Message) -> tuple[str, dict[str, float], str | None]:
    """(site, scores, problem); `problem` is None only for a reply that holds
    exactly the whitelisted scores, each NaN or within its range."""
    if reply.has_error():
        return "", {}, f"the node answered with an error: {reply.error.reason}"
    content = reply.content
    if set(content.keys()) != {keys.SCORES, keys.SITE}:
        return "", {}, f"unexpected records {sorted(content.keys())}"
    metrics, site = content[keys.SCORES], content[keys.SITE]
    if not isinstance(metrics, MetricRecord) or set(metrics.keys()) != set(keys.REPLY_SCORES):
        return "", {}, "the scores are not exactly the whitelisted keys"
    if not isinstance(site, ConfigRecord) or set(site.keys()) != set(keys.REPLY_SITE):
        return "", {}, "the site record holds more than the site's name"
    name = site[keys.SITE_NAME]
    if not isinstance(name, str) or not name.strip():
        return "", {}, "the site name is not a non-empty text"
    values: dict[str, float] = {}
    for key in keys.REPLY_SCORES:
        value = metrics[key]
        # A MetricRecord may also hold lists; bool is an int but never a score.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "", {}, f"score {key} = {value!r} is not a number"
        values[key] = value = float(value)
        upper = math.inf if key in _UNBOUNDED else 1.0
        if not math.isnan(value) and (not 0.0 <= value <= upper or math.isinf(value)):
            return "", {}, f"score {key} = {value} is outside [0, {upper:g}]"
    return name, values, None


def write_study_report(out_dir: Path, schema: Schema, manifest: Mapping,
                       sites: Mapping[str, Mapping[str, float]], rows: int) -> Path:
    report = study_report(schema, manifest, federated_summary(sites), rows)
    html, _ = write_report(report, out_dir / REPORT_NAME)
    return html
