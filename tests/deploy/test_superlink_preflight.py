"""The node's pre-flight check against a real SuperLink: a hospital whose key is not
enrolled is told so, with its fingerprint, before it hands over to Flower. And the
coordinator's side of the same question: `fedsynth-coordinator sites` lists the enrolled
sites by name as the SuperLink sees them.

One TLS SuperLink with node authentication for the module: siteA enrolled, siteB enrolled
then revoked with `fedsynth-coordinator revoke --control`, siteC never enrolled, siteD
enrolled (for the one test that lets the check activate a node).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from flwr.proto.control_pb2 import ListNodesRequest
from flwr.supercore.control import ControlHttpClient
from flwr.supernode import node_auth_http_interceptor

from coordinator.provisioning.certificates import new_ca
from node import superlink_preflight
from node.kit import NodeKit, read_kit
from node.superlink_preflight import SuperLinkUnreachable, check_enrolled
from protocols.kit_layout import KitError, parse_address
from protocols.node_keys import fingerprint, read_public_key_file

from cli_process import one_paragraph_error, run_cli
from federation import Federation, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ENROLLED, REVOKED, NEVER_ENROLLED = "siteA", "siteB", "siteC"
ENROLLED_TOO = "siteD"  # enrolled, for the test that lets the probe activate the node


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, demo_registry
               ) -> Iterator[Federation]:
    fed = Federation(tmp_path_factory.mktemp("preflight"),
                     [ENROLLED, REVOKED, NEVER_ENROLLED, ENROLLED_TOO],
                     demo_registry.schema_yaml)
    fed.provision()
    try:
        fed.start_superlink()
        fed.enroll(ENROLLED)
        fed.enroll(REVOKED)
        fed.enroll(ENROLLED_TOO)
        revoked = run_cli("fedsynth-coordinator", "revoke", "--site", REVOKED,
                          "--out", fed.kits, "--control", fed.address)
        assert revoked.returncode == 0, revoked.stderr
        yield fed
    finally:
        fed.stop()


def _kit(fed: Federation, site: str) -> NodeKit:
    return read_kit(fed.kits / site)


def _statuses(fed: Federation) -> dict[str, str]:
    """What the SuperLink's Control API lists: each registration's status, by the key's
    fingerprint (`flwr supernode ls` shows neither key nor name)."""
    client = ControlHttpClient.from_server_address(
        fed.address, insecure=False, root_certificates=fed.ca.read_bytes(), interceptors=())
    with client:
        nodes = client.ListNodes(ListNodesRequest()).nodes_info
    return {_fingerprint(node.public_key): node.status for node in nodes}


def _fingerprint(pem: bytes) -> str:
    key = serialization.load_pem_public_key(pem)
    return fingerprint(key.public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH))


def _site_fingerprint(fed: Federation, site: str) -> str:
    return read_public_key_file(fed.kits / site / "node-auth.pub").fingerprint


def test_an_enrolled_key_passes_and_leaves_the_node_offline(federation):
    check_enrolled(_kit(federation, ENROLLED))
    check_enrolled(_kit(federation, ENROLLED))
    # No ghost: the probe activated nothing, the registration is as `register` left it.
    assert _statuses(federation)[_site_fingerprint(federation, ENROLLED)] == "registered"


def test_a_flower_that_activated_on_the_probe_would_see_the_node_deactivated(
        federation, monkeypatch):
    """Should a later Flower check the heartbeat interval only after activating, the
    check puts the node back offline at once (here: an interval Flower 1.42 accepts)."""
    monkeypatch.setattr(superlink_preflight, "PROBE_HEARTBEAT_INTERVAL", 30.0)
    check_enrolled(_kit(federation, ENROLLED_TOO))
    assert _statuses(federation)[_site_fingerprint(federation, ENROLLED_TOO)] == "offline"


@pytest.mark.parametrize("site", [NEVER_ENROLLED, REVOKED])
def test_a_key_the_superlink_does_not_hold_is_told_with_its_fingerprint(federation, site):
    with pytest.raises(KitError) as refused:
        check_enrolled(_kit(federation, site))
    message = str(refused.value)
    assert not isinstance(refused.value, SuperLinkUnreachable)
    assert "does not accept this site's node-auth key" in message
    assert _site_fingerprint(federation, site) in message
    assert str(federation.kits / site / "node-auth.pub") in message
    assert federation.address in message and "\n" not in message


def test_a_superlink_not_certified_by_the_kits_ca_is_refused(federation, tmp_path):
    other = tmp_path / "other-ca.pem"
    other.write_bytes(new_ca("another", dt.datetime.now(dt.timezone.utc), 30).cert_pem)
    kit = dataclasses.replace(_kit(federation, ENROLLED), root_certificates=other)
    with pytest.raises(KitError) as refused:
        check_enrolled(kit)
    message = str(refused.value)
    assert "does not verify" in message and str(other) in message
    assert not isinstance(refused.value, SuperLinkUnreachable)


def test_an_unreachable_superlink_is_named(federation):
    address = parse_address(f"127.0.0.1:{free_port()}")
    kit = dataclasses.replace(_kit(federation, ENROLLED), superlink=address)
    with pytest.raises(SuperLinkUnreachable) as refused:
        check_enrolled(kit)
    assert f"Cannot reach the SuperLink at {address} (Connection refused)" in str(refused.value)


def test_the_coordinator_lists_the_enrolled_sites_by_name(federation):
    listed = run_cli("fedsynth-coordinator", "sites", "--out", federation.kits,
                     "--control", federation.address)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {ENROLLED, NEVER_ENROLLED, ENROLLED_TOO}  # siteB is revoked
    statuses = _statuses(federation)
    for site in (ENROLLED, ENROLLED_TOO):
        key = _site_fingerprint(federation, site)
        assert rows[site][1] == key and rows[site][2].isdigit()
        assert rows[site][3] == statuses[key]
    assert rows[NEVER_ENROLLED][1:] == [_site_fingerprint(federation, NEVER_ENROLLED), "-",
                                        "NOT", "REGISTERED"]


def test_start_tells_a_never_enrolled_hospital_why_before_flower_runs(federation, tmp_path,
                                                                      demo_registry):
    records = tmp_path / "records.csv"
    demo_registry.sites["hospital-01"].to_csv(records, index=False)
    result = run_cli("fedsynth-node", "start", "--kit", federation.kits / NEVER_ENROLLED,
                     "--data", records, "--runtime-port", str(free_port()),
                     "--state-dir", tmp_path / "state", "--ledger-head", tmp_path / "head")
    message = one_paragraph_error(result, "fedsynth-node")
    assert "does not accept this site's node-auth key" in message
    assert _site_fingerprint(federation, NEVER_ENROLLED) in message


def test_a_clock_far_off_the_coordinators_is_named(federation, monkeypatch):
    """Node authentication signs a timestamp; the SuperLink refuses one 10 minutes old."""
    late = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    monkeypatch.setattr(node_auth_http_interceptor, "now", lambda: late)
    with pytest.raises(KitError) as refused:
        check_enrolled(_kit(federation, ENROLLED))
    assert "clock" in str(refused.value) and "HTTP 401" in str(refused.value)
