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

import shutil
import sys
from pathlib import Path

from flwr.common.constant import FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION
from flwr.supercore.constant import FLWR_DISABLE_UPDATE_CHECK

from protocols.errors import FedsynthError

NO_DOWNLOADS = {FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION: "1",
                FLWR_DISABLE_UPDATE_CHECK: "1",
                "FLWR_TELEMETRY_ENABLED": "0"}


def flower_executable(name: str) -> str:
    """Flower's `name` (`flwr`, `flower-supernode`) of this Python environment, else the
    first one on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise FedsynthError(f"`{name}` was not found next to {sys.executable} or on PATH; "
                            "install fedsynth (which brings Flower) in this environment.")
    return found
