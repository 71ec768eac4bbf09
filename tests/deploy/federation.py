"""A real federation on loopback for the multi-process tests.

Real processes, as an operator runs them: `fedsynth-coordinator provision`
writes the kits; `flower-superlink` serves TLS with the consortium certificate
and accepts only enrolled node keys; each hospital is `fedsynth-node start
--kit ... --data ...`, which becomes a `flower-supernode`; enrolment and the
study go through the `flwr` CLI. Every process is started in its own process
group and `stop()` ends each group (the SuperLink's ServerApp and a node's
ClientApp processes included), also when a test fails. Every process runs with
Flower's runtime dependency installation off (`ENVIRONMENT`), as the deployment
files run them: nothing is fetched while a study runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONNECTION = "fedsynth-test"
# The shared consortium of tests/deploy/conftest.py: three enrolled hospitals, and a
# fourth provisioned (it holds a key and a kit) but never enrolled.
SHARED_SITES = ["hospital-01", "hospital-02", "hospital-03"]
STRANGER = "hospital-04"
# What every Flower process of the harness runs with (Flower's own variable names).
ENVIRONMENT = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """An executable of this Python environment (where pip put the entry points)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


class Federation:
    """Kits, a SuperLink, SuperNodes and `flwr` runs under one folder."""

    def __init__(self, root: Path, sites: list[str], schema_yaml: str) -> None:
        self.root, self.sites, self.port = root, sites, free_port()
        self.kits = root / "kits"
        self.schema = root / "schema.yaml"
        self.schema.write_text(schema_yaml)
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, **ENVIRONMENT}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.kits / "coordinator" / "ca.pem"

    def provision(self, epsilon_budget: float | None = None) -> None:
        budget = [] if epsilon_budget is None else ["--epsilon-budget", str(epsilon_budget)]
        self._run([tool("fedsynth-coordinator"), "provision", "--sites", ",".join(self.sites),
                   "--out", str(self.kits), "--superlink", self.address,
                   "--schema", str(self.schema), *budget])
        home = self.root / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\nroot-certificates = "{self.ca}"\n')

    def start_superlink(self, *extra: str, tls: bool = True, separate_serverapp: bool = False
                        ) -> None:
        """`separate_serverapp`: the layout of deploy/systemd and deploy/compose.yaml —
        the SuperLink runs no app code (`--isolation process`) and a `flower-superexec`
        of its own (process "serverapp", authenticated by a shared secret) runs the
        ServerApp; without it the SuperLink starts the ServerApp itself."""
        coordinator = self.kits / "coordinator"
        security = (["--ssl-ca-certfile", str(self.ca),
                     "--ssl-certfile", str(coordinator / "superlink.pem"),
                     "--ssl-keyfile", str(coordinator / "superlink.key"),
                     "--enable-supernode-auth"] if tls else ["--insecure"])
        secret = self.root / "superexec.secret"
        if separate_serverapp:
            secret.write_bytes(os.urandom(32))
            secret.chmod(0o600)
            extra = ("--isolation", "process", "--superexec-auth-secret-file", str(secret),
                     *extra)
        self._start("superlink", [tool("flower-superlink"), *security,
                                  "--database", str(self.root / "superlink.db"),
                                  "--disable-runtime-dependency-installation",
                                  "--host", "127.0.0.1", "--port", str(self.port), *extra],
                    home=self.root / "superlink-home")
        self.wait_for_port()
        if separate_serverapp:
            self._start("serverapp", [tool("flower-superexec"),
                                      "--runtime-api-address", self.address,
                                      "--root-certificates", str(self.ca),
                                      "--superexec-auth-secret-file", str(secret)],
                        home=self.root / "serverapp-home")

    def enroll(self, site: str) -> None:
        key = self.kits / "coordinator" / "enrolled" / f"{site}.pub"
        self._run([tool("flwr"), "supernode", "register", str(key), CONNECTION, "--name", site])

    def start_node(self, site: str, data: Path) -> subprocess.Popen:
        return self._start(site, [tool("fedsynth-node"), "start", "--kit",
                                  str(self.kits / site), "--data", str(data),
                                  "--runtime-port", str(free_port())],
                           home=self.root / f"{site}-home")

    def node_statuses(self) -> list[str]:
        """The status of every node the SuperLink knows (`flwr supernode ls`)."""
        listed = subprocess.run([tool("flwr"), "supernode", "ls", "--format", "json"],
                                capture_output=True, text=True, timeout=60,
                                env=self._env(self.root / "flwr-home"))
        if "{" not in listed.stdout:
            return []
        return [node["status"] for node in
                json.loads(listed.stdout[listed.stdout.index("{"):])["nodes"]]

    def wait_until_online(self, count: int, timeout: float = 180.0) -> None:
        """Until `count` nodes are online: a study starts once `min-sites` are, so one
        started earlier could leave a slower node out of its first round."""
        deadline = time.monotonic() + timeout
        while (online := self.node_statuses().count("online")) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {online} of {count} nodes came online")
            time.sleep(0.5)

    def start_study(self, out_dir: Path, project: Path = REPO, **run_config: object
                    ) -> subprocess.Popen:
        """`flwr run` of an app (this repository's unless `project` names another folder)
        on the federation, streaming its log."""
        config = {"engine": "deployment", "schema-path": str(self.schema),
                  "out-dir": str(out_dir), "superlink-address": self.address,
                  "root-certificates": str(self.ca),
                  "signing-key": str(self.kits / "coordinator" / "manifest-signing.key"),
                  **run_config}
        text = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
        return subprocess.Popen([tool("flwr"), "run", str(project), CONNECTION, "--stream",
                                 "--run-config", text], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env=self._env(self.root / "flwr-home"))

    def run_study(self, out_dir: Path, timeout: float, project: Path = REPO,
                  **run_config: object) -> tuple[int, str]:
        """Run a study to its end: (exit status, its log)."""
        study = self.start_study(out_dir, project, **run_config)
        try:
            output, _ = study.communicate(timeout=timeout)
        finally:
            if study.poll() is None:
                study.kill()
                study.wait()
        return study.returncode, output

    def ledger(self, site: str) -> list[dict]:
        """The site's ledger entries (a line still being written is left out)."""
        path = self.kits / site / "state" / "privacy-ledger.jsonl"
        complete = path.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete]

    def wait_for_port(self, timeout: float = 60.0) -> None:
        """Until the SuperLink accepts connections (TLS or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the SuperLink did not listen on {self.address}: {self.log('superlink')}")

    def tls_handshake(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            context.wrap_socket(raw, server_hostname="127.0.0.1").close()

    def freeze(self, name: str) -> None:
        """SIGSTOP a process and everything below it, at once."""
        for group in self._groups(self.processes[name]):
            os.killpg(group, signal.SIGSTOP)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        groups = self._groups(process)
        for signal_ in (sig, signal.SIGKILL):
            for group in groups:
                try:
                    os.killpg(group, signal_)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
            if signal_ == signal.SIGKILL or not any(_group_alive(g) for g in groups):
                break

    @staticmethod
    def _groups(process: subprocess.Popen) -> set[int]:
        """flower-superlink starts its SuperExec in a process group of its own: the
        groups of every descendant, not only the group this harness started."""
        groups = {process.pid}
        for pid in _descendants(process.pid):
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
        return groups

    def runs_below(self, name: str, command: str) -> bool:
        """Whether a live process started by process `name` has `command` in its command line."""
        for pid in _descendants(self.processes[name].pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if command.encode() in cmdline:
                return True
        return False

    def stop(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    def log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _start(self, name: str, argv: list[str], home: Path) -> subprocess.Popen:
        (self.root / "logs").mkdir(exist_ok=True)
        home.mkdir(exist_ok=True)
        log = (self.root / "logs" / f"{name}.log").open("a")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   env=self._env(home), start_new_session=True)
        self.processes[name] = process
        return process

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                env=self._env(self.root / "flwr-home"))
        if result.returncode != 0:
            raise RuntimeError(f"{argv[:3]} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _env(self, home: Path) -> dict[str, str]:
        return {**self.env, "FLWR_HOME": str(home)}


def stop_tree(process: subprocess.Popen) -> None:
    """End `process` and every process below it, whatever group each is in: SIGTERM, then
    SIGKILL for whatever is still there (for processes started outside a Federation)."""
    groups = Federation._groups(process)
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not any(_group_alive(g) for g in groups):
            return


def _descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (children may have left its group)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
