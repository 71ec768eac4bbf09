"""`fedsynth-coordinator revoke --site NAME`: the site's key leaves the enrolled set for good,
the revocation is recorded, and with `--control` the running SuperLink refuses the node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_process import one_paragraph_error, run_cli
from node.cli import main as node_main
from protocols.node_keys import read_public_key_file
from simulation.cli import main as coordinator_main

SITES = ("siteA", "siteB")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _consortium(root: Path, address: str = "fl.consortium.example:443") -> Path:
    """Kits provisioned from keys the sites made themselves (set up in-process)."""
    for site in SITES:
        assert node_main(["keygen", "--out", str(root / "hospitals" / site)]) == 0
    out = root / "kits"
    assert coordinator_main(["provision", "--out", str(out), "--superlink", address,
                             *[f"--site={s}={root / 'hospitals' / s / 'node-auth.pub'}"
                               for s in SITES]]) == 0
    return out


@pytest.fixture
def kits(tmp_path: Path, capsys) -> Path:
    out = _consortium(tmp_path)
    capsys.readouterr()
    return out


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_revoke_takes_the_key_out_of_the_enrolled_set_and_records_it(kits):
    coordinator = kits / "coordinator"
    key = (coordinator / "enrolled" / "siteA.pub").read_bytes()
    result = run_cli("fedsynth-coordinator", "revoke", "--site", "siteA", "--out", kits)
    assert result.returncode == 0, result.stderr
    assert not (coordinator / "enrolled" / "siteA.pub").exists()
    assert (coordinator / "enrolled" / "siteB.pub").is_file()
    [moved] = (coordinator / "revoked").glob("siteA.*.pub")
    assert moved.read_bytes() == key
    [entry] = [json.loads(line) for line in
               (coordinator / "revocations.jsonl").read_text().splitlines()]
    fingerprint = read_public_key_file(moved).fingerprint
    assert entry["site"] == "siteA" and entry["fingerprint"] == fingerprint
    assert entry["public_key"].encode() == key.strip() and entry["revoked_at"].endswith("Z")
    assert entry["superlink_nodes_unregistered"] is None
    assert 'sites = ["siteB"]' in (coordinator / "consortium.toml").read_text()
    readme = (coordinator / "README.md").read_text()
    assert "enrolled/siteA.pub" not in readme and "enrolled/siteB.pub" in readme
    assert f"Revoked site siteA (node-auth key {fingerprint})" in result.stdout
    assert "still accepts this key" in result.stdout and "--control" in result.stdout


def test_revoke_refuses_an_unknown_site_and_changes_nothing(kits):
    before = _listing(kits)
    err = one_paragraph_error(run_cli("fedsynth-coordinator", "revoke", "--site", "siteZ",
                                      "--out", kits), "fedsynth-coordinator")
    assert "Site 'siteZ' is not enrolled" in err and "the enrolled sites are: siteA, siteB" in err
    assert _listing(kits) == before


def test_a_revoked_site_cannot_be_revoked_twice_nor_its_key_enrolled_again(kits, capsys):
    assert coordinator_main(["revoke", "--site", "siteB", "--out", str(kits)]) == 0
    capsys.readouterr()
    assert coordinator_main(["revoke", "--site", "siteB", "--out", str(kits)]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert coordinator_main(["provision", "--out", str(kits), "--site",
                             f"siteB2={kits.parent / 'hospitals/siteB/node-auth.pub'}"]) == 2
    assert "is revoked" in capsys.readouterr().err
    assert not (kits / "siteB2").exists()


def test_a_revoked_site_may_enrol_a_new_key_of_its_own(kits, capsys):
    """A hospital whose key was exposed: revoked, a new keygen, enrolled again by name."""
    assert coordinator_main(["revoke", "--site", "siteA", "--out", str(kits)]) == 0
    shutil.rmtree(kits / "siteA")  # the old kit, sent long ago
    new = kits.parent / "hospitals" / "siteA-new"
    assert node_main(["keygen", "--out", str(new)]) == 0
    assert coordinator_main(["provision", "--out", str(kits), "--site",
                             f"siteA={new / 'node-auth.pub'}"]) == 0
    assert ((kits / "coordinator/enrolled/siteA.pub").read_bytes()
            == (new / "node-auth.pub").read_bytes())


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_revoke_with_control_makes_the_running_superlink_refuse_the_node(tmp_path):
    """A real TLS SuperLink with node authentication: siteA is registered with the `flwr`
    CLI, revoked with --control, and its SuperNode is then refused."""
    port = _free_port()
    kits = _consortium(tmp_path, f"127.0.0.1:{port}")
    coordinator = kits / "coordinator"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_HOME": str(tmp_path / "flwr-home")}
    (tmp_path / "flwr-home").mkdir()
    (tmp_path / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "t"\n\n[superlink.t]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{coordinator / "ca.pem"}"\n')
    superlink = subprocess.Popen(
        [_tool("flower-superlink"), "--ssl-ca-certfile", str(coordinator / "ca.pem"),
         "--ssl-certfile", str(coordinator / "superlink.pem"),
         "--ssl-keyfile", str(coordinator / "superlink.key"), "--enable-supernode-auth",
         "--database", str(tmp_path / "superlink.db"),
         "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port",
         str(port)], env={**env, "FLWR_HOME": str(tmp_path / "superlink-home")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port)
        for site in SITES:
            subprocess.run([_tool("flwr"), "supernode", "register",
                            str(coordinator / "enrolled" / f"{site}.pub"), "t", "--name", site],
                           env=env, check=True, capture_output=True, timeout=60)
        result = run_cli("fedsynth-coordinator", "revoke", "--site", "siteA", "--out", kits,
                         "--control", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        assert "refuses this key from now on" in result.stdout
        [entry] = [json.loads(line) for line in
                   (coordinator / "revocations.jsonl").read_text().splitlines()]
        listed = json.loads(subprocess.run(
            [_tool("flwr"), "supernode", "ls", "t", "--format", "json", "--verbose"],
            env=env, check=True, capture_output=True, text=True, timeout=60).stdout)
        status = {n["node-id"]: n["status"] for n in listed["nodes"]}
        [revoked_id] = entry["superlink_nodes_unregistered"]
        assert status.pop(str(revoked_id)) == "unregistered"
        assert list(status.values()) == ["registered"]  # siteB is still accepted
        log = tmp_path / "supernode.log"
        with log.open("w") as handle:  # a file: the SuperNode's children inherit it
            node = subprocess.Popen(
                [_tool("flower-supernode"), "--superlink", f"127.0.0.1:{port}",
                 "--root-certificates", str(coordinator / "ca.pem"),
                 "--auth-supernode-private-key",
                 str(tmp_path / "hospitals" / "siteA" / "node-auth.key"),
                 "--port", str(_free_port())], env={**env, "FLWR_HOME": str(tmp_path / "sn")},
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert node.wait(timeout=120) != 0
        finally:
            _stop(node)
        assert "could not establish a connection" in log.read_text()
    finally:
        _stop(superlink)


def _stop(process: subprocess.Popen) -> None:
    """End the process's whole group (Flower's SuperExec and app processes included):
    SIGTERM, then SIGKILL for whatever is still there."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def _tool(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
