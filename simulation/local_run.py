"""`fedsynth-coordinator local-run`: the Flower app's local study (`flwr run .`) with
nothing downloaded and nothing left running.

Plain `flwr run .` in Flower 1.42 (`flwr/cli/local_superlink.py`) starts a detached
`flower-superlink --simulation` in its own session, with the caller's environment and
no pid file, and never stops it. That SuperLink installs the app's dependencies with
`uv sync` against the package index before every run unless its environment has
`FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`, and a later `flwr run` reuses
whichever SuperLink answers on 127.0.0.1:39091, however it was started. Nothing a
project ships changes that: neither `[tool.flwr.app]` in `pyproject.toml` nor a
connection in `$FLWR_HOME/config.toml` has a setting for it.

So this command runs the same study through Flower's own `flwr run`, against a local
SuperLink it starts itself: Flower's local command line (`superlink_argv`) plus
`--disable-runtime-dependency-installation`, with the variable, Flower's telemetry and
update check off and Ray on loopback (`simulation.engine.ray_environment`) in the
environment of every process, on free loopback ports, under a private `FLWR_HOME`
that is removed afterwards. When the study ends, fails or is interrupted (Ctrl-C,
SIGTERM), the SuperLink is stopped with everything started under it: its process
group, and the SuperExec, simulation process and Ray that Flower starts in another
session. The exit status is 0 only when Flower reports the run completed and the
cohort's manifest was written (`flwr run` itself exits 0 after a failed run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
from flwr.cli.constant import LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE
from flwr.common.constant import FLWR_HOME, ISOLATION_MODE_SUBPROCESS

from protocols.errors import FedsynthError
from protocols.flower_environment import NO_DOWNLOADS
from protocols.release.app_bundle import release_project
from protocols.release.manifest import MANIFEST_NAME
from simulation.engine import ray_environment

FLWR = "flwr"  # found on the environment's PATH, which starts with this Python's folder
CONNECTION = "local"  # the one connection in the private FLWR_HOME's config.toml
# Flower reads the local SuperLink's two ports from these (flwr/cli/constant.py).
HTTP_PORT_VARIABLE = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
CONTROL_PORT_VARIABLE = "FLWR_LOCAL_CONTROL_API_PORT"
OFFLINE_ENVIRONMENT = {**NO_DOWNLOADS, "RAY_USAGE_STATS_ENABLED": "0"}
COMPLETED = "finished:completed"
STARTUP_SECONDS = 60.0  # Flower waits 15 s; a loaded machine imports Flower slower
STOP_SECONDS = 15.0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local-run", help="the Flower app's study (`flwr run`) in Flower's "
                       "local simulation federation, offline, leaving nothing running")
    p.add_argument("--out", type=Path, default=Path("fedsynth-out"),
                   help="where the cohort and its manifest go (sets the run config's "
                        "out-dir)")
    p.add_argument("--app", type=Path,
                   help="a fedsynth project folder to run (default: the installed release)")
    p.add_argument("--run-config", action="append", default=[], metavar="'KEY=VALUE ...'",
                   help="as `flwr run --run-config`, e.g. \"epsilon=1.0 generator='vae'\"")
    p.add_argument("--federation-config", action="append", default=[],
                   metavar="'KEY=VALUE ...'",
                   help="as `flwr run --federation-config`, e.g. \"num-supernodes=5\"")


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    run_config = [*args.run_config, f"out-dir={json.dumps(str(out))}"]
    with contextlib.ExitStack() as stack:
        app = args.app.resolve() if args.app else stack.enter_context(release_project())
        return local_study(app, out, run_config, args.federation_config)


def local_study(app: Path, out: Path, run_config: Sequence[str],
                federation_config: Sequence[str]) -> int:
    """Run `app` as `flwr run` does locally, with nothing downloaded; stop everything
    started for it before returning (also on failure, Ctrl-C or SIGTERM)."""
    started = time.time()
    with _terminated_as_exit(), tempfile.TemporaryDirectory(prefix="fedsynth-flwr-") as home:
        env = offline_environment(Path(home))
        superlink = _start_superlink(env)
        try:
            argv = [FLWR, "run", str(app), CONNECTION, "--stream"]
            argv += [f"--run-config={c}" for c in run_config]
            argv += [f"--federation-config={c}" for c in federation_config]
            if subprocess.run(argv, env=env, check=False).returncode != 0:
                raise FedsynthError("`flwr run` could not start the study; see its message "
                                    "above.")
            status, details = _run_status(env)
        finally:
            stop_superlink(superlink, env)
    manifest = out / MANIFEST_NAME
    if status != COMPLETED or not manifest.exists() or manifest.stat().st_mtime < started:
        raise FedsynthError(f"The study failed (Flower's run ended {status!r}"
                            f"{': ' + details if details else ''}); no cohort was released "
                            f"in {out}. The log above says why.")
    print(f"cohort: {out / 'synthetic.csv'}, manifest: {manifest} (check it with "
          f"`fedsynth-coordinator verify {out}`)", flush=True)
    return 0


def offline_environment(home: Path) -> dict[str, str]:
    """The environment of `flwr` and of the SuperLink with every process under it:
    a private FLWR_HOME with one local connection, free loopback ports, runtime
    dependency installation, telemetry and update checks off, Ray on loopback, and
    this Python's Flower first on PATH (the SuperLink starts its children by name)."""
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE}"\n', encoding="utf-8")
    http_port, control_port = _free_ports(2)
    with ray_environment():
        env = dict(os.environ)
    env.update(OFFLINE_ENVIRONMENT)
    env.update({FLWR_HOME: str(home), HTTP_PORT_VARIABLE: str(http_port),
                CONTROL_PORT_VARIABLE: str(control_port), "PYTHONUNBUFFERED": "1",
                "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                         env.get("PATH", os.defpath)])})
    return env


def superlink_argv(env: Mapping[str, str]) -> list[str]:
    """Flower 1.42's local SuperLink command (`_start_local_superlink`), with runtime
    dependency installation off."""
    home = Path(env[FLWR_HOME]) / "local-superlink"
    return ["flower-superlink", "--insecure", "--simulation",
            "--isolation", ISOLATION_MODE_SUBPROCESS,
            "--control-api-address", f"127.0.0.1:{env[CONTROL_PORT_VARIABLE]}",
            "--host", "127.0.0.1", "--port", env[HTTP_PORT_VARIABLE],
            "--log-file", str(home / "superlink.log"),
            "--log-rotation-interval-hours", "24", "--log-rotation-backup-count", "7",
            "--database", str(home / "state.db"),
            "--disable-runtime-dependency-installation"]


def _start_superlink(env: Mapping[str, str]) -> subprocess.Popen:
    """The SuperLink, in a session of its own (so that stopping its process group stops
    everything it started), once it answers on its health endpoint."""
    argv = superlink_argv(env)
    Path(argv[argv.index("--log-file") + 1]).parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    health = f"http://127.0.0.1:{env[HTTP_PORT_VARIABLE]}/health"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health, timeout=0.5).is_success:
                return process
        time.sleep(0.2)
    stop_superlink(process, env)
    log = Path(argv[argv.index("--log-file") + 1])
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise FedsynthError(f"Flower's local SuperLink did not start (exit status "
                        f"{process.returncode}).\n{tail}")


def stop_superlink(process: subprocess.Popen, env: Mapping[str, str]) -> None:
    """Stop the SuperLink and everything started under it. Flower starts the SuperExec
    in a session of its own, with the simulation process and Ray under it, so the
    SuperLink's process group is not all: every process that inherited this study's
    private FLWR_HOME is stopped too (found in /proc, where there is one)."""
    stop_process_group(process)
    stop_processes(processes_with(FLWR_HOME, env[FLWR_HOME]))


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group `process` leads (Flower stops its runs), SIGKILL to whatever
    of the group is left after STOP_SECONDS or once the leader is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop_processes(pids: Sequence[int]) -> None:
    """SIGTERM to each of `pids`, SIGKILL to those still there after STOP_SECONDS."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_SECONDS
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _running(pid)]
            time.sleep(0.1)


def processes_with(name: str, value: str) -> list[int]:
    """This user's live processes whose environment sets `name` to `value`."""
    entry = f"{name}={value}".encode() + b"\0"
    found = []
    for folder in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            environ = b"\0" + (folder / "environ").read_bytes()
            if b"\0" + entry in environ and int(folder.name) != os.getpid():
                found.append(int(folder.name))
    return found


def _running(pid: int) -> bool:
    """Not gone, and not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _run_status(env: Mapping[str, str]) -> tuple[str, str]:
    """The status of the one run on the private SuperLink, from `flwr list`."""
    listed = subprocess.run([FLWR, "list", CONNECTION, "--format", "json"], env=env,
                            capture_output=True, text=True, check=False)
    with contextlib.suppress(ValueError):
        runs = json.loads(listed.stdout).get("runs") or []
        if runs:
            return runs[-1]["status"], runs[-1].get("status-details") or ""
    return "unknown", listed.stderr.strip()[-500:]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """A SIGTERM (systemd, a container runtime, `timeout`) unwinds like Ctrl-C does, so
    the SuperLink is stopped on the way out."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
