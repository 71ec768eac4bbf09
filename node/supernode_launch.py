"""Turning a checked kit into the `flower-supernode` process that is the hospital's node.

The command always verifies the SuperLink with the consortium CA (TLS, never
`--insecure`) and proves the site's identity with its node-auth key. The node only
dials out; its own runtime port listens on 127.0.0.1. `exec_supernode` replaces the
current process so that, under systemd or a container runtime, signals reach Flower
directly.

Nothing is fetched at run time: `flower-supernode` is never given
`--allow-runtime-dependency-installation` (Flower 1.42 then installs no app
dependencies, `uv sync` never runs), and its environment (`LAUNCH_ENVIRONMENT`) also
sets `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`, the switch Flower's
SuperLink-side processes read, and turns off Flower's telemetry and update check,
so the node contacts nothing but the SuperLink.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from flwr.common.constant import FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION
from flwr.supercore.constant import FLWR_DISABLE_UPDATE_CHECK

from node.kit import NodeKit
from node.site_config import (DATA_PATH, DELTA_BUDGET, EPSILON_BUDGET, FEDERATED_EVALUATION,
                              LEDGER_HEAD_FILE, MANIFEST_PUBLIC_KEY, SCHEMA_PATH, SITE_NAME,
                              STATE_DIR, TRAIN_ON_SYNTHETIC)
from node.study_caps import CAP_KEYS
from protocols.kit_layout import KitError

EXECUTABLE = "flower-supernode"
# Set in the environment of every Flower process the node starts (the names are
# Flower's own constants, so a Flower that renamed them fails at import, not silently).
LAUNCH_ENVIRONMENT = {FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION: "1",
                      FLWR_DISABLE_UPDATE_CHECK: "1",
                      "FLWR_TELEMETRY_ENABLED": "0"}


def find_flower_supernode() -> str:
    """The `flower-supernode` of this Python environment, else the first one on PATH."""
    beside = shutil.which(EXECUTABLE, path=str(Path(sys.executable).parent))
    found = beside or shutil.which(EXECUTABLE)
    if not found:
        raise KitError(f"`{EXECUTABLE}` was not found next to {sys.executable} or on PATH; "
                       "install fedsynth (which brings Flower) in this environment.")
    return found


def supernode_argv(kit: NodeKit, executable: str) -> list[str]:
    """The full `flower-supernode` command line for `kit`."""
    return [executable,
            "--superlink", str(kit.superlink),
            "--root-certificates", str(kit.root_certificates),
            "--auth-supernode-private-key", str(kit.auth_private_key),
            "--port", str(kit.runtime_port),
            "--node-config", node_config(kit)]


def node_config(kit: NodeKit) -> str:
    """The `--node-config` string `node.site_config.resolve_site` reads.

    Flower parses it as space-separated TOML `key=value` pairs whose quoted values
    may not contain a quote, so a path with a double quote is refused.
    """
    paths = {SCHEMA_PATH: kit.schema, DATA_PATH: kit.records, STATE_DIR: kit.state_dir,
             MANIFEST_PUBLIC_KEY: kit.manifest_public_key,
             LEDGER_HEAD_FILE: kit.ledger_head_file}
    for key, path in paths.items():
        if '"' in str(path):
            raise KitError(f"The path {path} ({key}) contains a double quote, which Flower's "
                           "--node-config cannot carry; rename the file or folder.")
    values = {**{k: json.dumps(str(p)) for k, p in paths.items()},
              SITE_NAME: json.dumps(kit.site),
              EPSILON_BUDGET: repr(float(kit.epsilon_budget)),
              DELTA_BUDGET: repr(float(kit.delta_budget)),
              FEDERATED_EVALUATION: "true" if kit.federated_evaluation else "false"}
    caps = {key.key: repr(getattr(kit.caps, field)) for key, field in CAP_KEYS.items()}
    values.update(caps)
    order = (SCHEMA_PATH, DATA_PATH, SITE_NAME, STATE_DIR, EPSILON_BUDGET,
             DELTA_BUDGET, MANIFEST_PUBLIC_KEY, FEDERATED_EVALUATION, LEDGER_HEAD_FILE,
             *caps)
    if kit.train_on_synthetic:
        values[TRAIN_ON_SYNTHETIC] = "true"
        order += (TRAIN_ON_SYNTHETIC,)
    return " ".join(f"{key}={values[key]}" for key in order)


def shell_command(argv: list[str]) -> str:
    """`argv`, in `LAUNCH_ENVIRONMENT`, as one line a shell runs unchanged."""
    settings = [f"{name}={value}" for name, value in LAUNCH_ENVIRONMENT.items()]
    return shlex.join([*settings, *argv])


def starting_line(kit: NodeKit, n_records: int) -> str:
    """What the node tells its operator as it hands over to Flower."""
    return (f"fedsynth-node: starting site {kit.site} ({n_records} valid records) as a Flower "
            f"SuperNode dialling {kit.superlink} over TLS — outbound only, no inbound port; "
            f"state in {kit.state_dir}.")


def exec_supernode(argv: list[str]) -> NoReturn:
    """Become `flower-supernode` (same PID), so a service manager's signals reach it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, {**os.environ, **LAUNCH_ENVIRONMENT})
