"""`fedsynth-coordinator local-run`: the Flower app's local study, with nothing downloaded
and nothing left running.

Plain `flwr run .` starts Flower's local SuperLink with runtime dependency installation
on (it ran `uv sync` against the package index; offline it failed with Flower's exit
608) and leaves it running. The integration test here runs `local-run` in a network
namespace that has only loopback, with `python -m uv` and `python -m pip` replaced by
traps that leave a mark, and a private HOME, cache and temp folder: the study must
complete, write its cohort and manifest, start no installer, and leave no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.cli import local_superlink
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

from simulation import local_run

from cli_process import REPO

# The marginals family's 2 rounds, 2 simulated sites, a small cohort: about a minute.
SMALL = ["--run-config", "rows=50",
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"]
INSTALLERS = ("uv", "pip")
# No route leaves the namespace: a UDP "connect" needs a route but sends nothing.
OFFLINE_PROBE = ("import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                 ".connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n"
                 "else:\n    raise SystemExit('a route leaves this namespace')\n")


def test_the_superlink_is_flowers_local_one_with_installation_off(monkeypatch, tmp_path):
    """The command line is the one `flwr run .` starts (read from Flower's own code),
    plus the flag, and Flower's parser reads it as installation off."""
    monkeypatch.delenv(local_run.FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION, raising=False)
    env = local_run.offline_environment(tmp_path)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    monkeypatch.setattr(local_superlink, "LOCAL_SUPERLINK_HTTP_API_PORT",
                        env[local_run.HTTP_PORT_VARIABLE])
    monkeypatch.setattr(local_superlink, "LOCAL_CONTROL_API_ADDRESS",
                        f"127.0.0.1:{env[local_run.CONTROL_PORT_VARIABLE]}")
    flowers = {}

    def popen(command, **kwargs):
        flowers.update(command=command, env=kwargs["env"])
        raise OSError("captured")

    monkeypatch.setattr(local_superlink.subprocess, "Popen", popen)
    with pytest.raises(Exception, match="captured"):
        local_superlink._start_local_superlink()
    ours = local_run.superlink_argv(env)
    assert ours == [*flowers["command"], "--disable-runtime-dependency-installation"]
    assert not _parse_args_run_superlink().parse_args(ours[1:]).runtime_dependency_install
    assert env[local_run.FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION] == "1"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1" and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION" not in flowers["env"], \
        "Flower's own local SuperLink now sets the switch: this command may be unneeded"


def test_stopping_the_superlink_stops_its_group_and_what_left_the_group(monkeypatch,
                                                                       tmp_path):
    """Flower starts its SuperExec in a session of its own: the SuperLink's group is not
    all it started. Stand-ins: a leader whose child ignores SIGTERM, and a process in
    another session that carries the study's FLWR_HOME."""
    monkeypatch.setattr(local_run, "STOP_SECONDS", 1.0)
    env = {**os.environ, "FLWR_HOME": str(tmp_path)}
    leader = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(leader.stdout.readline())
    elsewhere = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    assert local_run.processes_with("FLWR_HOME", str(tmp_path)) == [elsewhere.pid]
    local_run.stop_superlink(leader, env)
    assert elsewhere.wait(5) is not None and leader.returncode is not None
    assert not _alive(child)
    assert bystander.poll() is None
    bystander.kill()
    bystander.wait()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_local_study_completes_with_the_network_unreachable(scratch):
    namespace = _offline_namespace()
    out = scratch / "out"
    result = _local_run(scratch, namespace, "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stdout[-4000:]
    assert (out / "synthetic.csv").exists() and (out / "manifest.json").exists()
    assert f"cohort: {out / 'synthetic.csv'}" in result.stdout
    assert not list((scratch / "trapped").iterdir()), "an installer was started"
    caches = [scratch / "uv-cache", *(scratch / "home" / ".cache" / i for i in INSTALLERS)]
    assert not [c for c in caches if c.exists()], sorted((scratch / "home").rglob("*"))[:20]
    assert "Installing application dependencies" not in result.stdout
    assert not _processes_with(scratch), "a process it started is still running"
    assert not list((scratch / "tmp").glob("fedsynth-flwr-*")), "its FLWR_HOME is left"


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_failed_study_exits_non_zero_and_leaves_nothing_running(scratch):
    out = scratch / "out"
    result = _local_run(scratch, [], "--out", str(out), "--run-config", "epsilon=-1",
                        *SMALL)
    assert result.returncode == 2, result.stdout[-4000:]
    assert "The study failed" in result.stderr and "finished:failed" in result.stderr
    assert not (out / "manifest.json").exists()
    assert not _processes_with(scratch)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_an_interrupted_study_leaves_nothing_running(scratch):
    process = subprocess.Popen(_command(scratch, [], "--out", str(scratch / "out"), *SMALL),
                               env=_environment(scratch), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # the first round: the simulation process and Ray are up
        if "configure_train" in line:
            break
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert not _processes_with(scratch)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short folder (Ray's socket paths must stay under 108 bytes) for HOME, caches,
    temp files and the installer traps."""
    folder = Path(tempfile.mkdtemp(prefix="fs-lr-", dir="/tmp"))
    for name in ("home", "tmp", "trapped"):
        (folder / name).mkdir()
    for installer in INSTALLERS:  # a regular package: a namespace one loses to the real one
        (folder / "traps" / installer).mkdir(parents=True)
        (folder / "traps" / installer / "__init__.py").write_text("")
        (folder / "traps" / installer / "__main__.py").write_text(
            f"import pathlib, sys\npathlib.Path({str(folder / 'trapped' / installer)!r})"
            ".write_text(' '.join(sys.argv))\nsys.exit(1)\n")
    yield folder
    for pid in _processes_with(folder):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _local_run(scratch: Path, namespace: list[str], *args: str
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(scratch, namespace, *args), env=_environment(scratch),
                          capture_output=True, text=True, timeout=200, check=False)


def _command(scratch: Path, namespace: list[str], *args: str) -> list[str]:
    code = "import sys; from simulation.cli import main; sys.exit(main())"
    return [*namespace, sys.executable, "-c", code, "local-run", *args]


def _environment(scratch: Path) -> dict[str, str]:
    """The traps first on the Python path (Flower runs `python -m uv`), every cache and
    temp folder inside `scratch`; every process started inherits it, which is how the
    test finds them afterwards (its TMPDIR)."""
    python_path = [str(scratch / "traps"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
            "HOME": str(scratch / "home"), "XDG_CACHE_HOME": str(scratch / "home" / ".cache"),
            "UV_CACHE_DIR": str(scratch / "uv-cache"), "TMPDIR": str(scratch / "tmp")}


def _offline_namespace() -> list[str]:
    """The command prefix that runs a command in a new network namespace with only
    loopback up; skips the test, saying why, where one cannot be made."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs util-linux `unshare` and iproute2 `ip` to cut the network off")
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else \
        ["unshare", "--user", "--map-root-user", "--net"]
    prefix = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "offline"]
    probe = subprocess.run([*prefix, sys.executable, "-c", OFFLINE_PROBE],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace with only loopback here: "
                    f"{(probe.stderr or probe.stdout).strip()[-300:]}")
    return prefix


def _processes_with(scratch: Path) -> list[int]:
    """Live processes whose environment has this test's TMPDIR (so: started by the
    command under test, or by what it started)."""
    marker = f"TMPDIR={scratch / 'tmp'}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False
