"""The hospital side: everything that touches patient records.

Records are loaded and validated here, identifier columns are dropped before
anything else looks at them, and the generator is trained with DP-SGD. Only
model weights and whitelisted scalars ever leave this package.
"""

import os as _os

# fedsynth never contacts anything but the federation itself: Flower's and
# Ray's telemetry and update checks stay off unless an operator turns them on.
# Set before Flower is first imported, which reads them at import time.
for _name, _off in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                    ("RAY_USAGE_STATS_ENABLED", "0")):
    _os.environ.setdefault(_name, _off)
