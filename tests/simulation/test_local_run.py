"""`fedsynth-coordinator local-run`: the Flower app's local study, with nothing downloaded
and nothing left running.

Plain `flwr run .` starts Flower's local SuperLink with runtime dependency installation
on (it ran `uv sync` against the package index; offline it failed with Flower's exit
608) and leaves it running. The integration tests run `local-run` as an operator does,
in a separate process (`offline`): in a network namespace with only loopback and
`python -m uv` / `python -m pip` trapped, the study must complete, write its cohort and
manifest, start no installer and leave no process behind; a failed or interrupted study
must exit non-zero and leave no process behind either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from flwr.cli import local_superlink
from flwr.common.constant import FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION as SWITCH
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

from simulation import local_run

from offline import Scratch, alive, offline_prefix

# The marginals family's 2 rounds, 2 simulated sites, a small cohort: about a minute.
SMALL = ["--run-config", "rows=50",
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"]


def test_the_superlink_is_flowers_local_one_with_installation_off(monkeypatch, tmp_path):
    """The command line is the one `flwr run .` starts (read from Flower's own code),
    plus the flag, and Flower's parser reads it as installation off."""
    monkeypatch.delenv(SWITCH, raising=False)
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
    assert env[SWITCH] == "1"
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
    assert not alive(child)
    assert bystander.poll() is None
    bystander.kill()
    bystander.wait()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_local_study_completes_with_the_network_unreachable(scratch):
    out = scratch.path / "out"
    result = scratch.run(*scratch.command("fedsynth-coordinator", "local-run", "--out",
                                          str(out), *SMALL, prefix=offline_prefix()))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (out / "synthetic.csv").exists() and (out / "manifest.json").exists()
    assert f"cohort: {out / 'synthetic.csv'}" in result.stdout
    assert not scratch.installers_started()
    assert "Installing application dependencies" not in result.stdout
    assert not scratch.processes(), "a process it started is still running"
    left = [p.name for p in (scratch.path / "tmp").iterdir()]
    assert not [n for n in left if n.startswith(("fedsynth-flwr-", "fedsynth-app-"))], left


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_failed_study_exits_non_zero_and_leaves_nothing_running(scratch):
    out = scratch.path / "out"
    result = scratch.run(*scratch.command("fedsynth-coordinator", "local-run", "--out",
                                          str(out), "--run-config", "epsilon=-1", *SMALL))
    assert result.returncode == 2, result.stdout[-4000:]
    assert "The study failed" in result.stderr and "finished:failed" in result.stderr
    assert not (out / "manifest.json").exists()
    assert not scratch.processes()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_an_interrupted_study_leaves_nothing_running(scratch):
    command = scratch.command("fedsynth-coordinator", "local-run", "--out",
                              str(scratch.path / "out"), *SMALL)
    process = subprocess.Popen(command, env=scratch.environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # the first round: the simulation process and Ray are up
        if "configure_train" in line:
            break
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert not scratch.processes()


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    folder = Scratch()
    yield folder
    folder.remove()
