"""After training: each site's own privacy report, read from its ledger.

Under secure aggregation the coordinator never sees a single site's reply,
so it cannot learn from the updates what each site spent. Instead, once the
rounds are over, it asks every node for its report on this study: the ε its
accountant gives for the steps it ran, those steps, and the rounds it
answered, with its ledger's head (recorded in the manifest). A reply with
anything else, a duplicate site, or an ε beyond the plan is dropped and
logged, like a bad update.
"""

from __future__ import annotations

import logging
import math

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from coordinator.strategy import flag_problem, record_problem, scalar_problem, site_problem
from protocols import messages as keys
from protocols.plan import StudyPlan
from protocols.release.manifest import SitePrivacySpent

log = logging.getLogger(__name__)


def collect_privacy_reports(grid: Grid, plan_record: ConfigRecord, plan: StudyPlan,
                            timeout: float
                            ) -> tuple[dict[str, SitePrivacySpent], dict[int, str]]:
    """Each reporting site's ε and steps, and the site name of each reporting node.

    (The rounds a site says it answered are checked, not trusted: which updates
    went into each secure sum is what the SecAgg+ workflow reports.)"""
    outgoing = [Message(content=RecordDict({keys.PLAN: ConfigRecord(dict(plan_record))}),
                        dst_node_id=node, message_type=MessageType.QUERY)
                for node in grid.get_node_ids()]
    sites: dict[str, SitePrivacySpent] = {}
    names: dict[int, str] = {}
    for reply in grid.send_and_receive(outgoing, timeout=timeout):
        name, spent, problem = _read(reply, plan)
        if not problem and name in sites:
            problem = f"a second report for site {name!r}"
        if problem:
            log.warning("privacy report dropped: %s", problem)
            continue
        sites[name], names[int(reply.metadata.src_node_id)] = spent, name
    return sites, names


def _read(reply: Message, plan: StudyPlan) -> tuple[str, SitePrivacySpent, str | None]:
    none = SitePrivacySpent(math.nan, 0)
    if reply.has_error():
        return "", none, f"the node answered with an error: {reply.error.reason}"
    content = reply.content
    problem = record_problem(content, {keys.REPORT: MetricRecord, keys.SITE: ConfigRecord})
    if problem:
        return "", none, problem
    report, site = content[keys.REPORT], content[keys.SITE]
    if set(report.keys()) != keys.REPORT_METRICS:
        return "", none, "the report is not exactly the whitelisted keys"
    problem = site_problem(site) or scalar_problem(report, site, lists=frozenset({keys.ROUNDS}))
    if problem:
        return "", none, problem
    epsilon, steps = float(report[keys.EPSILON_SPENT]), int(report[keys.STEPS_TOTAL])
    answered = [int(r) for r in report[keys.ROUNDS]]  # checked only (see above)
    if plan.private and not (0 <= epsilon <= plan.epsilon):
        return "", none, f"reported epsilon {epsilon} is outside [0, {plan.epsilon}]"
    if any(not 1 <= r <= plan.rounds for r in answered):
        return "", none, f"reported rounds {answered} are not rounds of the plan"
    synthetic = report[keys.SYNTHETIC_INPUT]
    if flag_problem(synthetic):
        return "", none, flag_problem(synthetic)
    return str(site[keys.SITE_NAME]), SitePrivacySpent(epsilon, steps, synthetic == 1.0,
                                                       str(site[keys.LEDGER_HEAD])), None
