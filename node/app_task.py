"""One ClientApp task of the node's app executor, in a process of its own.

Started by `node.app_executor` ahead of its task, this process first confines itself
(`node.sandbox`: the node's key and the executor's secret unreadable, only the runtime
port reachable) while it is still one thread and has imported nothing that starts
threads — Landlock confines the thread that asks and the threads it starts later, not
the ones already running. Only then does it import Flower and the installed ClientApp,
wait for its task's token on stdin, and run the task:

- it pulls the message and the study's app bundle and compares the bundle's sha256
  with the kit's pin. A bundle that differs is refused unrun: nothing of it is unpacked,
  installed or imported; the reply is an error naming both hashes (`refusal_reason`);
- otherwise it runs the ClientApp installed with this node's fedsynth (`node.client_app`),
  never the bundle's copy.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from node.sandbox import confine

LOG = logging.getLogger("fedsynth.node.app")
REFUSED_EXIT = 3
_FAILED = "the fedsynth ClientApp task failed at this node; its log has the reason"


def refusal_reason(received_sha256: str, pinned_sha256: str) -> str:
    """What the coordinator and the node's operator read when a bundle is refused."""
    return (f"fedsynth node refused the study's app bundle: its sha256 is {received_sha256}, "
            f"but this site's kit pins {pinned_sha256} (node.toml [app] sha256). The node "
            "runs only the fedsynth release the consortium agreed on; none of this bundle's "
            "code was run.")


def run_task(runtime_address: str, token: str, pinned_sha256: str) -> int:
    """The task of `token`: refuse a bundle that is not the pinned one, else run the
    installed ClientApp. Returns the process's exit status."""
    # pylint: disable=import-outside-toplevel - only once the process is confined
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (RuntimeTokenHttpInterceptor,
                                             RuntimeVersionHttpInterceptor)
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (pull_task_input, push_message,
                                                      push_task_output)

    from protocols.release.app_bundle import sha256_hex

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker())
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details, exit_status = SubStatus.FAILED, _FAILED, 1
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
        # Only the node's log holds the reason: an exception's text could quote a record.
        LOG.error("fedsynth app task failed: %s", exc, exc_info=exc)
        details, exit_status = _FAILED, exit_status or 1
    finally:
        push_task_output(client=client, context=context, sub_status=status, details=details)
        heartbeat.stop()
        client.close()
    return exit_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node.app_task",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--app-sha256", required=True)
    parser.add_argument("--deny", type=Path, action="append", default=[],
                        help="a file this process may not read")
    parser.add_argument("--parent-pid", type=int, required=True,
                        help="the executor: this process ends when it does")
    return parser


def _end_with(parent_pid: int) -> None:
    """End this process when the executor that started it is gone."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="executor-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    confine(args.deny, connect_port=int(args.runtime_api_address.rsplit(":", 1)[1]))
    _end_with(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import node.client_app  # noqa: F401 - the installed ClientApp, imported while waiting
    token = sys.stdin.readline().strip()
    if not token:
        return 0  # the executor stopped before it had a task for this process
    return run_task(args.runtime_api_address, token, args.app_sha256)


if __name__ == "__main__":
    sys.exit(main())
