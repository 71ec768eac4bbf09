"""The running SuperLink's own list of accepted node keys: unregistering a revoked site.

Flower's SuperLink (1.42, `--enable-supernode-auth`) keeps the node keys it accepts in
its database: `flwr supernode register` adds them, and there is no key file it re-reads
at start. Revoking a site in the coordinator kit alone would therefore leave the SuperLink
accepting it, across restarts. `unregister_key` asks the SuperLink's Control API, through
Flower's own client and over TLS verified by the consortium CA, to unregister every node
registered with the site's public key. The Control API is unauthenticated, so it is only
ever reached on the SuperLink's loopback address.
"""

from __future__ import annotations

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.control_pb2 import ListNodesRequest, UnregisterNodeRequest
from flwr.supercore.control import ControlHttpClient

from protocols.kit_layout import KitError, SuperLinkAddress
from protocols.node_keys import NodeAuthPublicKey

UNREGISTERED = "unregistered"  # Flower's status of a node whose key it no longer accepts


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
                         if node.status != UNREGISTERED and _is_key(node.public_key, key))
        for node_id in matching:
            client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))
    except httpx.HTTPError as exc:
        raise KitError(f"Cannot reach the SuperLink's Control API at {control} over TLS "
                       f"verified by the consortium CA ({exc}). Start the SuperLink, or give "
                       "its loopback address (the --host/--port it was started with) as "
                       "--control. Nothing was changed.") from None
    finally:
        client.close()
    return matching


def _is_key(registered: bytes, key: NodeAuthPublicKey) -> bool:
    """Whether the key bytes the SuperLink stored (PEM, as `flwr supernode register`
    sends them) are `key`."""
    try:
        loaded = serialization.load_pem_public_key(registered)
    except ValueError:
        return False
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        return False
    return loaded.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH) == key.line
