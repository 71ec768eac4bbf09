"""The consortium side: Flower ServerApp, aggregation, checkpoints, cohort release.

Nothing here ever sees a record: it receives generator weights and the
whitelisted scalars of `protocols.messages`, and releases post-processing of
the averaged (DP) weights only.
"""

import os as _os

# fedsynth never contacts anything but the federation itself: Flower's and
# Ray's telemetry and update checks stay off unless an operator turns them on.
# Set before Flower is first imported, which reads them at import time.
for _name, _off in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                    ("RAY_USAGE_STATS_ENABLED", "0")):
    _os.environ.setdefault(_name, _off)
