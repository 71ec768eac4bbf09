"""Nothing is downloaded at run time: every Flower process fedsynth starts runs with
Flower's runtime dependency installation off (no `uv sync` against a package index).

Flower 1.42 has two switches: `flower-superlink` installs an app's dependencies unless
given `--disable-runtime-dependency-installation` or run with
`FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1` (the managed SuperLink that a local
`flwr run` starts reads only the variable); `flower-supernode` and `flower-superexec`
install only when given `--allow-runtime-dependency-installation`. Each launcher's
command is read with Flower's own argument parser, so the test holds what Flower would
actually do, and each launcher also sets the variable.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from flwr.common.constant import FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION as SWITCH
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
from flwr.supercore.cli.flower_superexec import _parse_args as _parse_args_superexec
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

import node.supernode_launch as launch
from node.kit import read_kit
from simulation.cli import main as coordinator_main

from federation import ENVIRONMENT, Federation

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PARSERS = {"flower-superlink": _parse_args_run_superlink,
           "flower-supernode": _parse_args_run_supernode,
           "flower-superexec": _parse_args_superexec}


@pytest.fixture
def without_switch(monkeypatch):
    """Flower reads the variable when it builds its parser: judge the flags alone."""
    monkeypatch.delenv(SWITCH, raising=False)


def installs_dependencies(argv: list[str]) -> bool:
    """What Flower's own parser makes of `argv` (executable first)."""
    parser = PARSERS[Path(argv[0]).name]()
    args, _ = parser.parse_known_args(argv[1:])
    return bool(args.runtime_dependency_install)


def test_the_variable_is_the_one_this_flower_reads():
    assert SWITCH == "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
    flower = Path(__import__("flwr").__file__).parent
    readers = [p for p in flower.rglob("*.py") if "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION)"
               in p.read_text(encoding="utf-8")]
    assert readers, "no Flower module reads the variable any more"


def test_flowers_superlink_would_install_without_the_switch(without_switch):
    """The reason for all this: the SuperLink's default is to install."""
    assert installs_dependencies(["flower-superlink", "--insecure"])


def test_the_node_starts_flower_supernode_with_installation_off(monkeypatch, without_switch,
                                                                tmp_path, demo_registry):
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path / "kits"),
                             "--schema", str(schema)]) == 0
    kit = read_kit(tmp_path / "kits" / "siteA")
    secret = tmp_path / "superexec.secret"
    argv = launch.supernode_argv(kit, "/opt/venv/bin/flower-supernode", secret)
    assert not installs_dependencies(argv)
    started = []

    class Started:
        def __init__(self, args, env):
            started.append((args, env))
            self.returncode = 0

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(launch.subprocess, "Popen", Started)
    assert launch.run_node({"supernode": argv,
                            "app executor": launch.executor_argv(kit, secret)}) == 0
    assert [args for args, _ in started] == [argv, launch.executor_argv(kit, secret)]
    for _, env in started:
        assert env[SWITCH] == "1"
        assert env["FLWR_TELEMETRY_ENABLED"] == "0"
        assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert launch.shell_command(argv).startswith(f"{SWITCH}=1 ")


def test_every_compose_service_that_runs_flower_has_installation_off(without_switch):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    executables = {"superlink": "flower-superlink", "serverapp": "flower-superexec"}
    for name, service in compose["services"].items():
        if name == "egress":
            continue  # HAProxy, not Flower
        assert service["environment"][SWITCH] == "1", name
        if name in executables:
            assert not installs_dependencies([executables[name], *service["command"]]), name


@pytest.mark.parametrize("unit", ["fedsynth-superlink.service", "fedsynth-serverapp.service",
                                  "fedsynth-node.service"])
def test_every_systemd_unit_has_installation_off(unit, without_switch):
    text = (DEPLOY / "systemd" / unit).read_text()
    assert f"Environment={SWITCH}=1" in text.splitlines()
    argv = shlex.split(_continued(text, "ExecStart="))
    if Path(argv[0]).name in PARSERS:
        assert not installs_dependencies(argv)
    else:  # fedsynth-node start: pinned above, it starts flower-supernode with it off
        assert Path(argv[0]).name == "fedsynth-node" and argv[1] == "start"


@pytest.mark.parametrize("image", ["Dockerfile.node", "Dockerfile.serverapp"])
def test_every_image_has_installation_off(image):
    text = (DEPLOY / image).read_text()
    assert re.search(rf"^\s*{SWITCH}=1\b", text, re.M)
    assert "--allow-runtime-dependency-installation" not in text


def test_the_demo_script_exports_the_switch_and_passes_the_flag(without_switch):
    text = (DEPLOY / "demo-deployment.sh").read_text()
    assert f"export {SWITCH}=1" in text.splitlines()
    command = _continued(text, "start superlink ")
    # the shell's variables as values Flower's parser accepts (a port is a number)
    argv = shlex.split(re.sub(r'"\$[^"]*"', "9092", command))[1:]
    assert argv[0] == "flower-superlink" and not installs_dependencies(argv)


def _continued(text: str, start: str) -> str:
    """The line of `text` that begins with `start`, with its backslash-continued lines,
    without `start`."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(start):
            command = line[len(start):]
            while command.endswith("\\"):
                command = command[:-1] + " " + next(lines)
            return command
    raise AssertionError(f"no line starts with {start!r}")


def test_the_test_harness_runs_every_process_with_installation_off(tmp_path):
    assert ENVIRONMENT[SWITCH] == "1"
    federation = Federation(tmp_path, ["siteA"], "columns: []\n")
    assert federation._env(tmp_path / "home")[SWITCH] == "1"
