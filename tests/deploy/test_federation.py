"""The deployment engine with real processes on loopback: TLS, node authentication, faults.

A consortium is provisioned, a real `flower-superlink` started with TLS and
`--enable-supernode-auth`, real nodes with `fedsynth-node start`, and studies run
with `flwr run`; each fixture ends every process group it started, also when a
test fails. The tests that leave every process running use the federation the deployment
tests share (`consortium`, tests/deploy/conftest.py: three enrolled sites, and a fourth
provisioned but never enrolled, in the coordinator's production layout); those that kill a
process or need another SuperLink get their own (`federation`). A SecAgg+ study over TLS
with three sites runs in test_operator_guide.py (the guide's own study, each site verifying
the release against its ledger); the production layout's ServerApp, apart from the
SuperLink, is pinned in test_deployment_study.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from federation import SHARED_SITES, STRANGER, Federation, free_port, tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SITES = SHARED_SITES
# The VAE, named (pyproject's default is the marginals family): these tests pin its rounds,
# steps and a node lost between rounds.
SMALL = {"generator": "vae", "local-steps": 2, "rows": 100, "hidden": 16}


@pytest.fixture
def federation(tmp_path: Path, demo_registry) -> Iterator[Federation]:
    fed = Federation(tmp_path, SITES, demo_registry.schema_yaml)
    for site in SITES:
        demo_registry.sites[site].to_csv(tmp_path / f"{site}.csv", index=False)
    fed.provision()
    try:
        yield fed
    finally:
        fed.stop()


def _start(fed: Federation, sites: list[str]) -> None:
    fed.start_superlink()
    for site in sites:
        fed.enroll(site)
        fed.start_node(site, fed.root / f"{site}.csv")
    fed.wait_until_online(len(sites))


def _wait_for(condition: Callable[[], bool], timeout: float, what: str,
              every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _round_entries(fed: Federation, site: str, study: str | None = None) -> list[int]:
    """The rounds charged on the site's ledger (of one study, if named)."""
    return [e["round"] for e in fed.ledger(site)
            if e["kind"] == "round" and study in (None, e["study"])]


def test_an_unenrolled_node_key_is_refused(consortium):
    federation = consortium
    stranger = federation.start_node(STRANGER, federation.root / f"{STRANGER}.csv")
    stranger.wait(timeout=120)
    # `start` asks the SuperLink first (node.superlink_preflight), which refuses the key,
    # and tells the hospital so instead of handing over to Flower.
    assert stranger.returncode == 2
    assert "does not accept this site's node-auth key" in federation.log(STRANGER)
    assert federation.node_statuses() == ["online"] * len(SITES)  # the enrolled


def test_a_plaintext_connection_is_refused(consortium):
    federation = consortium
    federation.tls_handshake()  # the consortium CA verifies the SuperLink
    # Plain HTTP to the Fleet API gets no HTTP answer from the TLS port.
    connection = http.client.HTTPConnection("127.0.0.1", federation.port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        connection.request("POST", "/v1/fleet/pull-messages", body=b"")
        connection.getresponse()
    connection.close()
    # A SuperNode dialling in plaintext never gets a node id ...
    assert "Connection attempt failed" in _plaintext_supernode(federation)
    # ... and Flower itself will not pair a node-auth key with plaintext.
    with_key = _plaintext_supernode(
        federation, "--auth-supernode-private-key",
        str(federation.kits / SITES[0] / "node-auth.key"))
    assert "requires a secure TLS connection" in with_key


def _plaintext_supernode(federation: Federation, *extra: str) -> str:
    node = subprocess.Popen(
        [tool("flower-supernode"), "--insecure", "--superlink", federation.address,
         "--max-retries", "1", "--max-wait-time", "10", "--port", str(free_port()), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=federation._env(federation.root / "plain-home"), start_new_session=True)
    try:
        output, _ = node.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # still retrying: it never got in either
        os.killpg(node.pid, signal.SIGKILL)
        output, _ = node.communicate()
    assert node.returncode != 0 and "SuperNode ID" not in output, output[-2000:]
    return output


def test_the_coordinator_refuses_a_superlink_that_serves_plaintext(federation):
    federation.start_superlink(tls=False)
    home = federation.root / "flwr-home" / "config.toml"
    home.write_text(home.read_text().replace(
        f'root-certificates = "{federation.ca}"', "insecure = true"))
    out = federation.root / "study"
    _, log = federation.run_study(out, timeout=300, rounds=1, **SMALL)
    assert "did not complete a TLS handshake" in log, log[-4000:]  # (flwr run exits 0 anyway)
    assert not (out / "manifest.json").exists()


def test_a_killed_node_leaves_the_study_to_the_remaining_sites(federation):
    _start(federation, SITES)
    out = federation.root / "study"
    study = federation.start_study(out, rounds=2, **SMALL,
                                   **{"min-sites": 2, "round-timeout": 25.0})
    try:
        _wait_for(lambda: (out / "checkpoints" / "round-0001.json").exists(), 300,
                  "round 1 never finished")
        federation.kill(SITES[2], signal.SIGKILL)
        output, _ = study.communicate(timeout=420)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 0, output[-4000:]
    manifest = _manifest(out)
    # The dead site's round-1 update is in the final model; it had no part in round 2.
    assert manifest["contributions"] == {SITES[0]: [1, 2], SITES[1]: [1, 2], SITES[2]: [1]}
    assert manifest["contributors"] == SITES
    assert manifest["privacy"]["sites"][SITES[2]]["steps"] == SMALL["local-steps"]


def test_a_restarted_coordinator_resumes_from_its_checkpoint_without_charging_twice(
        federation):
    _start(federation, SITES)
    out = federation.root / "study"
    plan = {**SMALL, "rounds": 2, "round-timeout": 120.0}
    first = federation.start_study(out, **plan)

    def every_site_answered_round_2() -> bool:
        ledgers = [federation.kits / s / "state" / "privacy-ledger.jsonl" for s in SITES]
        return all(p.exists() and 2 in _round_entries(federation, s)
                   for p, s in zip(ledgers, SITES))

    try:
        # Kill it as late as possible: the sites have answered (and charged) round 2,
        # but the coordinator has not checkpointed it yet, so it must ask again.
        _wait_for(every_site_answered_round_2, 300, "round 2 was never answered", every=0.05)
        federation.freeze("superlink")  # the ServerApp too, before it can checkpoint
        assert not (out / "checkpoints" / "round-0002.json").exists(), "frozen too late"
        federation.kill("superlink", signal.SIGKILL)
    finally:
        first.kill()  # the `flwr run` client only streamed the log
        first.wait()
    assert not (out / "manifest.json").exists()
    federation.start_superlink()  # same database: the enrolled keys are kept
    code, log = federation.run_study(out, timeout=420, **plan)
    assert code == 0, log[-4000:]
    assert "resuming the study after round 1/2" in log, "the kill came too late"
    manifest = _manifest(out)
    for site in SITES:
        assert _round_entries(federation, site) == [1, 2]  # each round charged once
        kinds = [e["kind"] for e in federation.ledger(site)]
        assert kinds.count("reserve") == 1
        assert manifest["privacy"]["sites"][site]["steps"] == 2 * SMALL["local-steps"]
    assert manifest["contributions"] == {site: [1, 2] for site in SITES}

