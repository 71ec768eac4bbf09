"""Keys of everything that crosses the wire between coordinator and nodes.

A node's training reply holds exactly one `ArrayRecord` (the generator's
weights or noisy tables, same names and shapes as the global model), one
`MetricRecord` with the keys in `REPLY_METRICS`, and one `ConfigRecord` with
the keys in `REPLY_SITE`. Every value in them is either a DP release the
site's ledger charges (the arrays) or a function of the plan, the schema and
the site's kit alone (the scalars: `WEIGHT` is always 1, the steps and ε follow
from the plan and the round). Nothing else leaves a node: no record, no record
count, no column statistic; a refusal is one fixed text (`DECLINED`).
"""

ARRAYS = "arrays"
PLAN = "config"
METRICS = "metrics"
SITE = "site"

SCHEMA_SHA256 = "schema-sha256"
SERVER_ROUND = "server-round"

WEIGHT = "weight"
STEPS = "steps"
FEDAVG_WEIGHT = 1.0  # every site weighs the same: a weight by size would reveal the size
STEPS_TOTAL = "steps-total"
EPSILON_SPENT = "epsilon-spent"
# 1.0 when the site's operator chose to train on a fedsynth synthetic cohort
# (fedsynth-node start --train-on-synthetic), else 0.0: the manifest records it.
SYNTHETIC_INPUT = "synthetic-input"
REPLY_METRICS = frozenset({WEIGHT, STEPS, STEPS_TOTAL, EPSILON_SPENT, SYNTHETIC_INPUT})

SITE_NAME = "name"
# The hash of the last entry of the site's privacy ledger (64 hex digits) after it
# charged this answer: a function of the ledger alone, whose entries hold the plan's
# public values and their times, never a record. The coordinator records it in the
# manifest and presents it at the site's next study (`LEDGER_HEADS`), so a ledger
# that was deleted, truncated or rewritten since is refused. Not secret.
LEDGER_HEAD = "ledger-head"
# A training reply's and a privacy report's site record; an evaluation reply's holds
# the name alone (the release it follows is already signed).
REPLY_SITE = frozenset({SITE_NAME, LEDGER_HEAD})
EVALUATION_SITE = frozenset({SITE_NAME})

# In the `PLAN` record of a training message, when the coordinator has released a
# study with these sites before: one "SITE=HEAD" text per site, the last ledger head
# that site reported to it. A node whose name is listed refuses to train unless its
# ledger still holds that entry (`node.ledger.anchor`).
LEDGER_HEADS = "ledger-heads"

# Every refusal, whatever its reason, reaches the coordinator as this one text;
# the reason stays in the node's log for its operator.
DECLINED = "the site declined; its operator can read why in the node's log"

# Federated evaluation (after the release, when the plan has an evaluation-epsilon):
# the coordinator sends the released cohort's CSV bytes and its signed manifest's
# bytes under `COHORT`, and the `PLAN`. A node that took part in that very study
# and has not evaluated it yet replies with one ArrayRecord `EVALUATION_TABLES`
# (the noisy count tables of `protocols.evaluation.release`, charged on its ledger)
# and the `SITE` record.
COHORT = "cohort"
COHORT_CSV = "csv"
COHORT_MANIFEST = "manifest"
EVALUATION_TABLES = "tables"

# Privacy report (after training; needed under secure aggregation, where the
# coordinator never sees a single site's reply): the coordinator sends the
# `PLAN` record; a node replies with `SITE` and one MetricRecord `REPORT`
# holding exactly `REPORT_METRICS`, read from its privacy ledger: the ε its
# accountant reports for this study, the steps run and the rounds it answered,
# and whether it trained on a synthetic cohort.
REPORT = "privacy-report"
ROUNDS = "rounds"
REPORT_METRICS = frozenset({EPSILON_SPENT, STEPS_TOTAL, ROUNDS, SYNTHETIC_INPUT})
