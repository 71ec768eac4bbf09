"""The node's own app executor: it runs only the installed fedsynth ClientApp, and only
for a study that ships the app bundle the site's kit pins.

Flower's default SuperNode installs each study's app bundle (FAB) and imports the
ClientApp *from it*: the coordinator's code, run at the hospital with its records in
reach. A fedsynth node instead starts its SuperNode with `--isolation process`, so the
SuperNode runs no app code, and starts this executor beside it (`fedsynth-node start`
does both). Over the SuperNode's loopback runtime API (the SuperExec protocol, signed
with a secret the two share), the executor takes each ClientApp task and starts one
process for it, which:

1. confines itself (`node.sandbox`): it cannot read the node-auth key or the shared
   secret, connects only to the runtime port, and cannot reach into the SuperNode;
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

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (RuntimeTokenHttpInterceptor,
                                         RuntimeVersionHttpInterceptor,
                                         SuperExecAuthHttpInterceptor)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (pull_task_input, push_message,
                                                  push_task_output)

from node.sandbox import confine
from protocols.release.app_bundle import sha256_hex

LOG = logging.getLogger("fedsynth.node.app")
# The runtime API call that hands out tasks; only a holder of the shared secret may make it.
_ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
_POLL_SECONDS = 0.5
# The task's token travels in the environment, not on a command line others can list.
TOKEN_VARIABLE = "FEDSYNTH_APP_TOKEN"
REFUSED_EXIT = 3


def refusal_reason(received_sha256: str, pinned_sha256: str) -> str:
    """What the coordinator and the node's operator read when a bundle is refused."""
    return (f"fedsynth node refused the study's app bundle: its sha256 is {received_sha256}, "
            f"but this site's kit pins {pinned_sha256} (node.toml [app] sha256). The node "
            "runs only the fedsynth release the consortium agreed on; none of this bundle's "
            "code was run.")


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
    try:
        while True:
            running = [task for task in running if task.poll() is None]
            reply = client.AcquireTask(AcquireTaskRequest(
                supported_task_types=[TaskType.CLIENT_APP.value]))
            if reply.HasField("task") and reply.token:
                running.append(_launch_task(runtime_address, reply.token, pinned_sha256,
                                            denied))
            time.sleep(_POLL_SECONDS)
    finally:
        client.close()


def _launch_task(runtime_address: str, token: str, pinned_sha256: str,
                 denied: list[Path]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "node.app_executor", "task",
            "--runtime-api-address", runtime_address, "--app-sha256", pinned_sha256,
            "--parent-pid", str(os.getpid())]
    for path in denied:
        argv += ["--deny", str(path)]
    return subprocess.Popen(argv, env={**os.environ, TOKEN_VARIABLE: token})


def run_task(runtime_address: str, token: str, pinned_sha256: str,
             denied: list[Path]) -> int:
    """One ClientApp task, confined: refuse a bundle that is not the pinned one, else run
    the installed ClientApp. Returns the process's exit status."""
    confine(denied, connect_port=int(runtime_address.rsplit(":", 1)[1]))
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker())
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details, exit_status = SubStatus.FAILED, "the task did not finish", 1
    try:
        message, context, _run, fab = pull_task_input(client)
        received = sha256_hex(fab.content)
        del fab
        if received != pinned_sha256:
            details = refusal_reason(received, pinned_sha256)
            LOG.error("%s", details)
            reply = Message(Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=details),
                            reply_to=message)
            exit_status = REFUSED_EXIT
        else:
            from node.client_app import app  # the installed release's, never the bundle's
            reply = app(message=message, context=context)
            status, details, exit_status = SubStatus.COMPLETED, "", 0
        push_message(client, reply, context)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # Flower's own ClientApp process reports a failed task the same way: a task
        # status the SuperNode relays, and a log line for the operator.
        # Only the node's log holds the reason: an exception's text could quote a record.
        LOG.error("fedsynth app task failed: %s", exc, exc_info=exc)
        details = "the fedsynth ClientApp task failed at this node; its log has the reason"
        exit_status = exit_status or 1
    finally:
        push_task_output(client=client, context=context, sub_status=status, details=details)
        heartbeat.stop()
        client.close()
    return exit_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node.app_executor",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "task"):
        command = sub.add_parser(name)
        command.add_argument("--runtime-api-address", required=True)
        command.add_argument("--app-sha256", required=True)
        command.add_argument("--deny", type=Path, action="append", default=[],
                             help="a file the app process may not read")
        command.add_argument("--parent-pid", type=int)
        if name == "serve":
            command.add_argument("--secret-file", type=Path, required=True)
    return parser


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this process when its parent (the executor or `fedsynth-node start`) is gone."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve(args.runtime_api_address, args.secret_file, args.app_sha256, args.deny)
        return 0
    token = os.environ.pop(TOKEN_VARIABLE, "")
    if not token:
        print("fedsynth app task: no task token in the environment", file=sys.stderr)
        return 2
    return run_task(args.runtime_api_address, token, args.app_sha256, args.deny)


if __name__ == "__main__":
    sys.exit(main())
