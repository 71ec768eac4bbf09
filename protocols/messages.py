"""Keys of everything that crosses the wire between coordinator and nodes.

A node's training reply holds exactly one `ArrayRecord` (the generator's
weights, same names and shapes as the global model), one `MetricRecord` with
the keys in `REPLY_METRICS`, and one `ConfigRecord` with the keys in
`REPLY_SITE`. Nothing else leaves a node: no record, no row count, no column
statistic. Site size is deliberately not sent, so FedAvg weighs every site
equally (`WEIGHT` is always 1).
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
