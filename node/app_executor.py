"""The node's own app executor: it runs only the installed fedsynth ClientApp, and only
for a study that ships the app bundle the site's kit pins.

Flower's default SuperNode installs each study's app bundle (FAB) and imports the
ClientApp *from it*: the coordinator's code, run at the hospital with its records in
reach. A fedsynth node instead starts its SuperNode with `--isolation process`, so the
SuperNode runs no app code, and starts this executor beside it (`fedsynth-node start`
does both). Over the SuperNode's loopback runtime API (the SuperExec protocol, signed
with a secret the two share), the executor takes each ClientApp task and hands it to
one process of its own, which:

1. confines itself (`node.sandbox`): it cannot read the node-auth key or the shared
   secret, cannot reach into the SuperNode, and (Linux 6.7+) connects only to the
   runtime port;
2. pulls the task's message and the study's bundle, and compares the bundle's sha256
   with the pin (`[app] sha256` of node.toml). A bundle that differs is **refused before
   any of its code runs**: nothing of it is unpacked, installed or imported. The reply is
   an error naming both hashes, the node's log says the same, and the study sees this
   site fail;
3. otherwise runs the ClientApp installed with this node's fedsynth (`node.client_app`),
   never the bundle's copy: the pin says the two are the same release, and the node runs
   the one it has.

`fedsynth-node start` checks at start that the installed release builds the pinned
bundle, so a node never accepts a bundle it does not itself run.

Why not Flower's own check (`flower-supernode --trusted-entities`): in Flower 1.42 a FAB
carries the signatures it checks only when the SuperLink fetched it from Flower Hub, an
internet service (`_get_remote_fab` / `_format_verification` in
flwr/superlink/servicer/control/control_handlers.py); a bundle a consortium builds and
ships itself has none, and the SuperNode refuses every study
(flwr/supernode/start_client_internal.py, "App verification is not supported by the
connected SuperLink"). It would also still run the bundle's code, signed by its publisher,
rather than the release the hospital installed. A hash pin needs no third party and names
the exact code.

Each task process (`node.app_task`) is started fresh, never forked from the executor, so
it never holds the shared secret; and ahead of its task: it confines itself first, while
it is a single thread, then imports the ClientApp (PyTorch and all) and waits for the
task's token on its standard input, so a message does not wait seconds for imports.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import (RuntimeVersionHttpInterceptor,
                                         SuperExecAuthHttpInterceptor)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient

LOG = logging.getLogger("fedsynth.node.app")
# The runtime API call that hands out tasks; only a holder of the shared secret may make it.
_ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
_POLL_SECONDS = 0.5


def serve(runtime_address: str, secret_file: Path, pinned_sha256: str,
          denied: list[Path]) -> None:
    """Take ClientApp tasks from the SuperNode, one process each, until stopped."""
    secret = secret_file.read_bytes()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                      SuperExecAuthHttpInterceptor(master_secret=secret,
                                                   protected_methods=frozenset({_ACQUIRE_TASK}))],
        retry_invoker=make_simple_http_retry_invoker())
    del secret
    LOG.info("fedsynth app executor: serving ClientApp tasks of app bundle %s", pinned_sha256)
    running: list[subprocess.Popen] = []
    spare = _task_process(runtime_address, pinned_sha256, denied)
    try:
        while True:
            running = [task for task in running if task.poll() is None]
            reply = client.AcquireTask(AcquireTaskRequest(
                supported_task_types=[TaskType.CLIENT_APP.value]))
            if reply.HasField("task") and reply.token:
                if spare.poll() is not None:  # it died waiting: start another for this task
                    spare = _task_process(runtime_address, pinned_sha256, denied)
                _hand_over(spare, reply.token)
                running.append(spare)
                spare = _task_process(runtime_address, pinned_sha256, denied)
            time.sleep(_POLL_SECONDS)
    finally:
        spare.kill()
        client.close()


def _task_process(runtime_address: str, pinned_sha256: str,
                  denied: list[Path]) -> subprocess.Popen:
    """A task process, started ahead of its task: it waits for a token on its stdin."""
    argv = [sys.executable, "-m", "node.app_task",
            "--runtime-api-address", runtime_address, "--app-sha256", pinned_sha256,
            "--parent-pid", str(os.getpid())]
    for path in denied:
        argv += ["--deny", str(path)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)


def _hand_over(process: subprocess.Popen, token: str) -> None:
    """Give a waiting task process its task's token (through a pipe: on no command line and
    in no environment another process could read)."""
    assert process.stdin is not None
    process.stdin.write(token + "\n")
    process.stdin.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node.app_executor",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--app-sha256", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--deny", type=Path, action="append", default=[],
                        help="a file the app processes may not read")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll of the SuperNode
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.runtime_api_address, args.secret_file, args.app_sha256, args.deny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
