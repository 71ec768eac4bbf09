"""The running SuperLink's own list of accepted node keys: listing the enrolled sites in it,
unregistering a revoked site.

Flower's SuperLink (1.42, `--enable-supernode-auth`) keeps the node keys it accepts in
its database: `flwr supernode register` adds them, and there is no key file it re-reads
at start. Revoking a site in the coordinator kit alone would therefore leave the SuperLink
accepting it, across restarts. `unregister_key` asks the SuperLink's Control API, through
Flower's own client and over TLS verified by the consortium CA, to unregister every node
registered with the site's public key. The Control API is unauthenticated, so it is only
ever reached on the SuperLink's loopback address.

`site_registrations` lists the enrolled sites by name as the SuperLink sees them (node id,
status). Flower stores the name `flwr supernode register --name` gives, but its `flwr
supernode ls` shows neither names nor keys, so the sites are matched by key here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.control_pb2 import ListNodesRequest, UnregisterNodeRequest
from flwr.supercore.control import ControlHttpClient

from protocols.kit_layout import KitError, SuperLinkAddress
from protocols.node_keys import NodeAuthPublicKey, fingerprint

UNREGISTERED = "unregistered"  # Flower's status of a node whose key it no longer accepts
NOT_REGISTERED = "NOT REGISTERED"  # an enrolled key the SuperLink does not accept


@dataclass(frozen=True)
class Registration:
    """One enrolled site at the SuperLink, or (`site` None) a node it accepts whose key is
    not enrolled."""

    site: str | None
    fingerprint: str
    node_id: int | None  # None: not registered
    status: str  # Flower's (registered, online, offline) or NOT_REGISTERED


@dataclass(frozen=True)
class RegisteredNode:
    """What the Control API lists of one node."""

    node_id: int
    status: str
    public_key: bytes  # PEM, as `flwr supernode register` sends it


def unregister_key(control: SuperLinkAddress, ca_pem: bytes, key: NodeAuthPublicKey
                   ) -> tuple[int, ...]:
    """Unregister the nodes the SuperLink at `control` accepts with `key`; their ids.

    An empty result means the SuperLink did not accept that key (never registered, or
    already unregistered). Raises `KitError` when the SuperLink cannot be reached."""
    client = ControlHttpClient.from_server_address(str(control), insecure=False,
                                                   root_certificates=ca_pem, interceptors=())
    try:
        nodes = client.ListNodes(ListNodesRequest()).nodes_info
        matching = tuple(node.node_id for node in nodes
                         if node.status != UNREGISTERED and _openssh_line(node.public_key)
                         == key.line)
        for node_id in matching:
            client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))
    except httpx.HTTPError as exc:
        raise _unreachable(control, exc, "Nothing was changed.") from None
    finally:
        client.close()
    return matching


def site_registrations(control: SuperLinkAddress, ca_pem: bytes,
                       enrolled: Mapping[str, NodeAuthPublicKey]) -> list[Registration]:
    """The enrolled sites as the SuperLink at `control` sees them, then any node it accepts
    whose key is not enrolled. Raises `KitError` when it cannot be reached."""
    client = ControlHttpClient.from_server_address(str(control), insecure=False,
                                                   root_certificates=ca_pem, interceptors=())
    try:
        nodes = client.ListNodes(ListNodesRequest()).nodes_info
    except httpx.HTTPError as exc:
        raise _unreachable(control, exc, "") from None
    finally:
        client.close()
    return match_registrations(
        [RegisteredNode(n.node_id, n.status, n.public_key) for n in nodes], enrolled)


def match_registrations(nodes: Iterable[RegisteredNode],
                        enrolled: Mapping[str, NodeAuthPublicKey]) -> list[Registration]:
    """Each enrolled site (by name) with the live nodes registered with its key, or
    NOT_REGISTERED; then the live nodes whose key no enrolled site holds."""
    live = [(node, _openssh_line(node.public_key)) for node in nodes
            if node.status != UNREGISTERED]
    found: list[Registration] = []
    for site, key in sorted(enrolled.items()):
        mine = [node for node, line in live if line == key.line]
        found += ([Registration(site, key.fingerprint, n.node_id, n.status) for n in mine]
                  or [Registration(site, key.fingerprint, None, NOT_REGISTERED)])
    enrolled_lines = {key.line for key in enrolled.values()}
    found += [Registration(None, fingerprint(line) if line else "(not an EC key)",
                           node.node_id, node.status)
              for node, line in live if line not in enrolled_lines]
    return found


def _openssh_line(registered: bytes) -> bytes | None:
    """The key the SuperLink stored (PEM, as `flwr supernode register` sends it) as the
    canonical OpenSSH line a site's `.pub` holds; None when it is not an EC key."""
    try:
        loaded = serialization.load_pem_public_key(registered)
    except ValueError:
        return None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        return None
    return loaded.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH)


def _unreachable(control: SuperLinkAddress, exc: httpx.HTTPError, after: str) -> KitError:
    return KitError(f"Cannot reach the SuperLink's Control API at {control} over TLS "
                    f"verified by the consortium CA ({exc}). Start the SuperLink, or give "
                    "its loopback address (the --host/--port it was started with) as "
                    f"--control. {after}".rstrip())
