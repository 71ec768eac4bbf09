"""Matching the SuperLink's registered nodes to the enrolled sites, by key: Flower's own
listing shows neither names nor keys."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from coordinator.provisioning.superlink_enrolment import (NOT_REGISTERED, RegisteredNode,
                                                          Registration, match_registrations)
from protocols.node_keys import NodeAuthPublicKey, new_node_auth_key_pair


def _pem(key: NodeAuthPublicKey) -> bytes:
    """The key as `flwr supernode register` sends it and the SuperLink stores it."""
    return serialization.load_ssh_public_key(key.line).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_each_enrolled_site_is_named_with_its_node_and_strangers_are_listed_last():
    a, b, c, stranger = (new_node_auth_key_pair().public for _ in range(4))
    nodes = [RegisteredNode(7, "online", _pem(a)), RegisteredNode(8, "unregistered", _pem(b)),
             RegisteredNode(9, "registered", _pem(stranger))]
    assert match_registrations(nodes, {"siteB": b, "siteA": a, "siteC": c}) == [
        Registration("siteA", a.fingerprint, 7, "online"),
        Registration("siteB", b.fingerprint, None, NOT_REGISTERED),  # unregistered: revoked
        Registration("siteC", c.fingerprint, None, NOT_REGISTERED),
        Registration(None, stranger.fingerprint, 9, "registered")]


def test_a_registered_key_that_does_not_decode_is_still_listed():
    [row] = match_registrations([RegisteredNode(4, "online", b"not a key")], {})
    assert row == Registration(None, "(not an EC key)", 4, "online")
