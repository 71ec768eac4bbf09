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
REPLY_METRICS = frozenset({WEIGHT, STEPS, STEPS_TOTAL, EPSILON_SPENT})

SITE_NAME = "name"
REPLY_SITE = frozenset({SITE_NAME})
