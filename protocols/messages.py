"""Keys of everything that crosses the wire between coordinator and nodes.

A node's training reply holds exactly one `ArrayRecord` (the generator's
weights, same names and shapes as the global model), one `MetricRecord` with
the keys in `REPLY_METRICS`, and one `ConfigRecord` with the keys in
`REPLY_SITE`. Nothing else leaves a node: no record, no row count more
precise than the plan allows, no column statistic. `WEIGHT` is 1 unless the
plan's size-granularity lets each site disclose its record count rounded to
that granularity (see `StudyPlan`).
"""

ARRAYS = "arrays"
PLAN = "config"
METRICS = "metrics"
SITE = "site"

SCHEMA_SHA256 = "schema-sha256"
SERVER_ROUND = "server-round"

WEIGHT = "weight"
STEPS = "steps"
STEPS_TOTAL = "steps-total"
EPSILON_SPENT = "epsilon-spent"
# 1.0 when the site's operator chose to train on a fedsynth synthetic cohort
# (fedsynth-node start --train-on-synthetic), else 0.0: the manifest records it.
SYNTHETIC_INPUT = "synthetic-input"
REPLY_METRICS = frozenset({WEIGHT, STEPS, STEPS_TOTAL, EPSILON_SPENT, SYNTHETIC_INPUT})

SITE_NAME = "name"
REPLY_SITE = frozenset({SITE_NAME})

# Federated evaluation (after the release): the coordinator sends the released
# cohort as CSV bytes; a node replies with one MetricRecord holding exactly the
# scalar scores in `REPLY_SCORES` (NaN where a score does not apply) and the
# `SITE` record. No figure, record, row count or column statistic leaves.
COHORT = "cohort"
COHORT_CSV = "csv"
SCORES = "scores"
REPLY_SCORES = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_ratio",
                "exact_copy_share", "km_distance", "hr_direction_agreement", "bias_flags")

# Privacy report (after training; needed under secure aggregation, where the
# coordinator never sees a single site's reply): the coordinator sends the
# `PLAN` record; a node replies with `SITE` and one MetricRecord `REPORT`
# holding exactly `REPORT_METRICS`, read from its privacy ledger: the ε its
# accountant reports for this study, the steps run and the rounds it answered,
# and whether it trained on a synthetic cohort.
REPORT = "privacy-report"
ROUNDS = "rounds"
REPORT_METRICS = frozenset({EPSILON_SPENT, STEPS_TOTAL, ROUNDS, SYNTHETIC_INPUT})
