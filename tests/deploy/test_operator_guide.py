"""deploy/README.md, followed literally: the shell commands of its §1-§5, in order, as real
processes on loopback, on hosts that start empty, up to a released, verified cohort.

Each fenced block of §1-§5 is run as it is written (`bash -e`), with only what is
host-specific replaced: the public address by the SuperLink's loopback one, port 9092 by a
free port, and `/etc`, `/var/lib` and `/srv` by a folder per machine (the coordinator, and
one per hospital). A block that runs `fedsynth-node` is a hospital's, run on each of
theirs with its site's name; the others are the coordinator's. What the guide leaves to
people (a hospital sends its node-auth.pub and receives its kit folder; the records and the
schema exist) is done between the blocks. Long-running commands (the SuperLink, the
SuperExec, each node) are started in the background; every other command must exit 0, the
SuperLink must listen and every node must come online at the SuperLink before §5's study
(`fedsynth-coordinator study`, which exits 0 only on a signed release of the bundle it
shipped); a hospital then verifies the cohort against its own kit and ledger, as §5 says.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation import ENVIRONMENT, free_port, stop_tree

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
GUIDE = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
SITES = {"siteA": "hospital-01", "siteB": "hospital-02", "siteC": "hospital-03"}
PUBLIC_ADDRESS = "fl.consortium.example:443"
LOCAL_PORT = "9092"
LONG_RUNNING = ("flower-superlink", "flower-superexec", "fedsynth-node start")
ONLINE_S = 120
STUDY_S = 500  # a SecAgg+ study of three hospitals, on a busy 2-core machine
STUDY_OUT = "var/lib/fedsynth-coordinator/studies/study-001"


@dataclass(frozen=True)
class Block:
    section: int
    text: str

    @property
    def hospital(self) -> bool:
        return "fedsynth-node" in self.text

    @property
    def long_running(self) -> bool:
        return any(command in self.text for command in LONG_RUNNING)


def guide_blocks(first: int = 1, last: int = 5) -> list[Block]:
    """The fenced blocks of sections `first`..`last`, in order."""
    text = GUIDE.read_text()
    sections = re.split(r"^## (\d+)\. ", text, flags=re.M)
    blocks = []
    for number, body in zip(sections[1::2], sections[2::2]):
        if first <= int(number) <= last:
            blocks += [Block(int(number), b)
                       for b in re.findall(r"^```[^\n]*\n(.*?)^```", body, re.S | re.M)]
    return blocks


class Host:
    """One machine: its own /etc, /var/lib, /srv and home under `root`."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True)
        (root / "home").mkdir()
        self.env = {**{k: v for k, v in os.environ.items() if k != "FLWR_HOME"},
                    **ENVIRONMENT, "HOME": str(root / "home"),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.processes: list[subprocess.Popen] = []
        self._logs: list = []

    def localise(self, text: str) -> str:
        text = text.replace(PUBLIC_ADDRESS, f"127.0.0.1:{self.port}")
        text = re.sub(rf"(127\.0\.0\.1:|--port ){LOCAL_PORT}\b", rf"\g<1>{self.port}", text)
        text = re.sub(r"(?<![\w/.$-])/(etc|var/lib|srv)/", rf"{self.root}/\1/", text)
        assert LOCAL_PORT not in text, text
        return text

    def run(self, text: str, timeout: float = 180) -> None:
        run_everywhere({self: text}, timeout)

    def begin(self, text: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-e", "-c", self.localise(text)], cwd=self.cwd,
                                env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def start(self, text: str, name: str) -> None:
        log = (self.root / f"{name}.log").open("w")
        self._logs.append(log)
        self.processes.append(subprocess.Popen(
            ["bash", "-e", "-c", self.localise(text)], cwd=self.cwd, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_tree(process)
        for log in self._logs:
            log.close()


def run_everywhere(scripts: dict[Host, str], timeout: float = 180) -> None:
    """Each host runs its script, all at once (they are separate machines); each must
    exit 0."""
    running = {host: host.begin(text) for host, text in scripts.items()}
    for host, process in running.items():
        output, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, f"{host.localise(scripts[host])}\n{output[-4000:]}"


def test_the_operators_guide_followed_literally_releases_a_verified_cohort(tmp_path,
                                                                           demo_registry):
    port = free_port()
    coordinator = Host(tmp_path / "coordinator", port)
    hospitals = {site: Host(tmp_path / site, port) for site in SITES}
    hosts = [coordinator, *hospitals.values()]
    try:
        for number, block in enumerate(guide_blocks()):
            if block.section == 5 and block.text.startswith("fedsynth-coordinator study"):
                _wait_until_online(coordinator, hosts)
                coordinator.run(block.text, timeout=STUDY_S)
                continue
            if block.hospital:
                _before_hospitals(block, coordinator, hospitals, demo_registry)
                scripts = {host: block.text.replace("siteA", site)
                           for site, host in hospitals.items()}
                if block.long_running:  # a node: each on its own local runtime port
                    for host, text in scripts.items():
                        host.start(text.replace("fedsynth-node start", "fedsynth-node start "
                                                f"--runtime-port {free_port()}"), "node")
                else:
                    run_everywhere(scripts)
            else:
                _before_coordinator(block, coordinator, hospitals, demo_registry)
                if block.long_running:
                    coordinator.start(block.text, f"section-{block.section}-{number}")
                    if "flower-superlink" in block.text:
                        _wait_for_port(port, coordinator)
                else:
                    coordinator.run(block.text)
        crashed = [host.root.name for host in hosts for p in host.processes
                   if p.poll() is not None]
        assert not crashed, "\n".join(_logs(host) for host in hosts)
        # §5: the coordinator sends the cohort; each hospital checks it with the guide's
        # command, against its own kit and ledger.
        [verify] = re.findall(r"`(fedsynth-node verify OUT_DIR --kit [^`]*)` \(a site\)",
                              " ".join(GUIDE.read_text().split()))
        for site, host in hospitals.items():
            received = host.cwd / "study-001"
            shutil.copytree(coordinator.root / STUDY_OUT, received)
            host.run(verify.replace("OUT_DIR", str(received)))
    finally:
        for host in hosts:
            host.stop()


def _before_coordinator(block: Block, coordinator: Host, hospitals: dict[str, Host],
                        demo_registry) -> None:
    """What people do before the coordinator's provisioning: each hospital sends its
    node-auth.pub; the consortium has its schema."""
    if "fedsynth-coordinator provision" not in block.text:
        return
    received = coordinator.cwd / "received"
    received.mkdir(exist_ok=True)
    for site, host in hospitals.items():
        shutil.copy(host.root / "etc/fedsynth/kit/node-auth.pub", received / f"{site}.pub")
    (coordinator.cwd / "consortium-schema.yaml").write_text(demo_registry.schema_yaml)


def _before_hospitals(block: Block, coordinator: Host, hospitals: dict[str, Host],
                      demo_registry) -> None:
    """Before a node starts: each hospital has received its kit folder and has records."""
    if not block.long_running:
        return
    for site, host in hospitals.items():
        shutil.copytree(coordinator.cwd / "kits" / site, host.cwd / site)
        records = host.root / "srv/fedsynth/records.csv"
        records.parent.mkdir(parents=True)
        demo_registry.sites[SITES[site]].to_csv(records, index=False)


def _wait_for_port(port: int, host: Host, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and host.processes[-1].poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"the SuperLink did not listen: {_logs(host)}")


def _wait_until_online(coordinator: Host, hosts: list[Host]) -> None:
    """Until §3's own listing (`fedsynth-coordinator sites`) shows every site online."""
    [listing] = [line for block in guide_blocks(3, 3) for line in block.text.splitlines()
                 if line.startswith("fedsynth-coordinator sites")]
    deadline, status = time.monotonic() + ONLINE_S, {}
    while time.monotonic() < deadline:
        result = subprocess.run(["bash", "-c", coordinator.localise(listing)],
                                cwd=coordinator.cwd, env=coordinator.env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        status = {line.split()[0]: line.split()[-1] for line in result.stdout.splitlines()[1:]}
        if status == {site: "online" for site in SITES}:
            return
        time.sleep(1)
    raise AssertionError(f"not every node came online: {status}\n"
                         + "\n".join(_logs(host) for host in hosts))


def _logs(host: Host) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                     for log in sorted(host.root.glob("*.log")))
