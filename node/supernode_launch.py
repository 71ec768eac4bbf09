"""Turning a checked kit into the hospital's node: a `flower-supernode` that runs no app
code, and beside it the node's own app executor.

The SuperNode always verifies the SuperLink with the consortium CA (TLS, never
`--insecure`) and proves the site's identity with its node-auth key. The node only
dials out; its own runtime port listens on 127.0.0.1. It runs with `--isolation
process`: it starts no ClientApp itself. `node.app_executor` (started beside it, with
a secret the two share for this run only) takes each ClientApp task, refuses a study
whose app bundle is not the one `node.toml` pins before any of the bundle's code
runs, and otherwise runs the ClientApp installed here, in a process that cannot read
the node's key (`node.sandbox`). `run_node` supervises both: a signal reaches both,
and when either ends the other is stopped and the node exits with its status.

Nothing is fetched at run time: `flower-supernode` is never given
`--allow-runtime-dependency-installation` (Flower 1.42 then installs no app
dependencies, `uv sync` never runs), its environment (`LAUNCH_ENVIRONMENT`) also
sets `FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`, the switch Flower's
SuperLink-side processes read, and turns off Flower's telemetry and update check,
and the executor never installs a bundle at all, so the node contacts nothing but
the SuperLink.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.kit import NodeKit
from node.sandbox import confines_network
from node.site_config import (DATA_PATH, DELTA_BUDGET, EPSILON_BUDGET, FEDERATED_EVALUATION,
                              LEDGER_HEAD_FILE, MANIFEST_PUBLIC_KEY, SCHEMA_PATH, SITE_NAME,
                              STATE_DIR, TRAIN_ON_SYNTHETIC)
from node.study_caps import CAP_KEYS
from protocols.flower_environment import NO_DOWNLOADS
from protocols.kit_layout import KitError

EXECUTABLE = "flower-supernode"
# Set in the environment of every Flower process the node starts.
LAUNCH_ENVIRONMENT = NO_DOWNLOADS


def supernode_argv(kit: NodeKit, executable: str, secret_file: Path) -> list[str]:
    """The full `flower-supernode` command line for `kit`: it runs no app code itself."""
    return [executable,
            "--superlink", str(kit.superlink),
            "--root-certificates", str(kit.root_certificates),
            "--auth-supernode-private-key", str(kit.auth_private_key),
            "--port", str(kit.runtime_port),
            "--isolation", "process",
            "--superexec-auth-secret-file", str(secret_file),
            "--node-config", node_config(kit)]


def executor_argv(kit: NodeKit, secret_file: Path) -> list[str]:
    """The node's app executor for `kit` (`node.app_executor`): it runs only the pinned
    bundle's studies, with the installed ClientApp, unable to read the key or the secret."""
    return [sys.executable, "-m", "node.app_executor",
            "--runtime-api-address", f"127.0.0.1:{kit.runtime_port}",
            "--app-sha256", kit.app_sha256,
            "--secret-file", str(secret_file),
            "--deny", str(kit.auth_private_key), "--deny", str(secret_file)]


@contextmanager
def executor_secret() -> Iterator[Path]:
    """A fresh secret the SuperNode and the executor share for one run of the node, in an
    owner-only folder that is removed when the node stops."""
    with tempfile.TemporaryDirectory(prefix="fedsynth-node-") as folder:
        path = Path(folder) / "superexec.secret"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(os.urandom(32))
        yield path


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
            f"state in {kit.state_dir}. It runs only studies of the app bundle "
            f"{kit.app_sha256[:16]}… (node.toml [app] sha256), with the ClientApp installed "
            "here, in a sandbox that cannot read the node's key"
            + ("." if confines_network() else " (this kernel cannot also confine its "
               "connections: Landlock ABI 4, Linux 6.7+; the unit or container does)."))


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOP_GRACE_SECONDS = 10.0


def run_node(commands: dict[str, list[str]]) -> int:
    """Run the node's processes until one ends; then stop the others and return the first
    one's exit status. A stop signal to this process is passed on to each."""
    sys.stdout.flush()
    sys.stderr.flush()
    environment = {**os.environ, **LAUNCH_ENVIRONMENT}
    children = {name: subprocess.Popen(argv, env=environment) for name, argv in commands.items()}

    def pass_on(signum: int, _frame: object) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in _STOP_SIGNALS}
    try:
        while True:
            ended = [child for child in children.values() if child.poll() is not None]
            if ended:
                child = ended[0]
                break
            time.sleep(0.2)
        for other in children.values():
            if other.poll() is None:
                other.terminate()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for other in children.values():
            try:
                other.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                other.kill()
                other.wait()
        status = child.returncode
        return 128 - status if status < 0 else status  # killed by a signal: 128 + its number
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
