"""The environment every Flower process fedsynth starts runs in: nothing downloaded, no
telemetry, no update check.

Flower 1.42 installs a study's app dependencies at run time (`uv sync` against a package
index) unless `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION` is set; its SuperLink and
local SuperLink read only that variable. fedsynth sets it, with the telemetry and update
switches, for every Flower process it starts: a node's SuperNode and app executor
(`node.supernode_launch`), a deployment study's `flwr run` (`coordinator.study_command`)
and the local study (`simulation.local_run`). The names are Flower's own constants, so a
Flower that renamed one fails at import, not silently.
"""

from __future__ import annotations

from flwr.common.constant import FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION
from flwr.supercore.constant import FLWR_DISABLE_UPDATE_CHECK

NO_DOWNLOADS = {FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION: "1",
                FLWR_DISABLE_UPDATE_CHECK: "1",
                "FLWR_TELEMETRY_ENABLED": "0"}
