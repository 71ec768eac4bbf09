"""Before the node hands over to Flower: does the SuperLink accept this site's key?

A SuperNode whose node-auth key the SuperLink does not hold (never registered, or
unregistered by `fedsynth-coordinator revoke`) tells its operator only that it "could
not establish a connection"; the reason is in the coordinator's log. `check_enrolled`
asks the SuperLink first, the way Flower 1.42's SuperNode connects
(`flwr.supernode.fleet_http_connection`): Flower's own Fleet HTTP client, TLS verified
by the kit's consortium CA only (never `--insecure`), each request signed by Flower's
node-auth interceptor with the site's private key. It turns the answer into one
paragraph for the hospital's IT: key not enrolled (with its fingerprint), SuperLink
unreachable, TLS not verified by the consortium CA, or, silently, enrolled.

The question asked leaves no trace in the SuperLink's state. The Fleet API has no
read-only "is this key registered?" call: every call but the two that register or
activate a node must name the node's id, which only activation returns. So the check
sends ActivateNode with the site's public key and a heartbeat interval outside the
range Flower accepts (`PROBE_HEARTBEAT_INTERVAL`). Flower 1.42 looks the key up first
(unknown key: HTTP 412, FLEET_NODE_ACTIVATION_FAILED), then validates the interval (a
known key: HTTP 400, FLEET_INVALID_HEARTBEAT_INTERVAL), and only then would mark the
node online: the node is never activated, `flwr supernode ls` keeps showing it as
registered (offline), and no study sees it. The coordinator's log gets one line per
check ("Heartbeat interval 0.0 is out of bounds" for an enrolled key). Were a later
Flower to activate the node anyway, the check deactivates it at once
(`_deactivate`); `tests/deploy/test_superlink_preflight.py` pins the 1.42 order.

The check sends what the SuperNode sends when it connects (the public key, a signed
timestamp, Flower's version headers) and nothing about the site's records.
"""

from __future__ import annotations

import ssl

import httpx
from flwr.proto.fleet_pb2 import ActivateNodeRequest, DeactivateNodeRequest
from flwr.supercore.error import ApiErrorCode, FlowerError
from flwr.supercore.interceptors.http.utils import add_headers
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supercore.protobuf.client import ProtobufCall, ProtobufRequestContext
from flwr.supercore.runtime_version_compatibility import (
    RuntimeVersionMetadata, get_runtime_version_incompatibility_exit_message)
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

from node.kit import NodeKit, load_auth_private_key
from protocols.kit_layout import NODE_AUTH_PUB, KitError
from protocols.node_keys import public_key_of

# Below Flower's minimum heartbeat interval (10 s): refused after the key lookup.
PROBE_HEARTBEAT_INTERVAL = 0.0
TIMEOUT_S = 15.0
# What a front (the consortium's reverse proxy) answers when the SuperLink behind it is down.
FRONT_WITHOUT_SUPERLINK = (httpx.codes.BAD_GATEWAY, httpx.codes.SERVICE_UNAVAILABLE,
                           httpx.codes.GATEWAY_TIMEOUT)


class SuperLinkUnreachable(KitError):
    """The SuperLink did not answer (down, or no route to it): possibly temporary, unlike
    the other refusals, so a caller may wait and try again rather than give up."""


def check_enrolled(kit: NodeKit) -> None:
    """Return when the SuperLink at `kit.superlink` accepts the kit's node-auth key; raise
    `KitError` (one paragraph) otherwise, `SuperLinkUnreachable` when it did not answer."""
    key = load_auth_private_key(kit.auth_private_key)
    fingerprint = public_key_of(key).fingerprint
    try:
        with FleetHttpClient(f"https://{kit.superlink}",
                             interceptors=[_RuntimeVersionHeaders(),
                                           NodeAuthHttpInterceptor(key, key.public_key())],
                             verify=ssl.create_default_context(
                                 cafile=str(kit.root_certificates)),
                             timeout=TIMEOUT_S) as client:
            try:
                node_id = client.ActivateNode(ActivateNodeRequest(
                    public_key=public_key_to_bytes(key.public_key()),
                    heartbeat_interval=PROBE_HEARTBEAT_INTERVAL)).node_id
            except httpx.HTTPStatusError as exc:
                _judge_refusal(kit, fingerprint, exc.response)
                return
            _deactivate(client, node_id)
    except httpx.TransportError as exc:
        raise _transport_failure(kit, exc) from None


def _judge_refusal(kit: NodeKit, fingerprint: str, response: httpx.Response) -> None:
    """Return when the refusal says the key is enrolled; raise the paragraph otherwise."""
    error = FlowerError.from_json(response.text)
    code = error.code if error is not None else None
    if code == ApiErrorCode.FLEET_INVALID_HEARTBEAT_INTERVAL:
        return  # the key was found; the probe's interval was refused before activation
    if code == ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED:
        raise KitError(
            f"The SuperLink at {kit.superlink} does not accept this site's node-auth key "
            f"(fingerprint {fingerprint}): it was never enrolled there, or its enrolment "
            f"was revoked. Send {kit.directory / NODE_AUTH_PUB} to the coordinator and read "
            f"them its fingerprint {fingerprint} by another channel (a phone call); start "
            "the node again once they have enrolled it. The node did not connect.")
    if version := get_runtime_version_incompatibility_exit_message(response.text):
        raise KitError(f"The SuperLink at {kit.superlink} refused this node's Flower "
                       f"version: {version.strip()} Install the fedsynth release the "
                       "consortium runs. The node did not connect.")
    if response.status_code == httpx.codes.UNAUTHORIZED:
        raise KitError(
            f"The SuperLink at {kit.superlink} refused this node's signed timestamp (HTTP "
            f"401), although the key (fingerprint {fingerprint}) signed it: this machine's "
            "clock is most likely more than 5 minutes off the coordinator's. Keep it on NTP "
            "and start the node again. The node did not connect.")
    if response.status_code in FRONT_WITHOUT_SUPERLINK:
        raise SuperLinkUnreachable(
            f"{kit.superlink} answered HTTP {response.status_code}: the consortium's front "
            "is up but the SuperLink behind it is not. Start the node again once the "
            "coordinator has it running. The node did not connect.")
    detail = error.message if error is not None else response.reason_phrase
    raise KitError(
        f"{kit.superlink} answered HTTP {response.status_code} ({detail}) where a Flower "
        "SuperLink's Fleet API would say whether it accepts this site's key: check "
        f"node.toml's [superlink] address against the kit the coordinator sent. The node "
        "did not connect.")


def _transport_failure(kit: NodeKit, exc: httpx.TransportError) -> KitError:
    """No answer: a certificate the consortium CA does not verify, or no connection."""
    tls = _cause(exc, ssl.SSLError)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return KitError(
            f"The server at {kit.superlink} presented a TLS certificate that the consortium "
            f"CA ({kit.root_certificates}) does not verify ({tls.verify_message}): either "
            "the kit's ca.pem is not this consortium's, or something on the way (a proxy "
            "that opens TLS) stands in for the SuperLink. The node did not connect; ask "
            "the coordinator for the kit's ca.pem and compare it.")
    if tls is not None:
        return KitError(
            f"No TLS session with {kit.superlink} ({tls.reason or tls}): whatever answers "
            "there is not the consortium's SuperLink speaking TLS. Check node.toml's "
            "[superlink] address against the kit. The node did not connect.")
    return SuperLinkUnreachable(
        f"Cannot reach the SuperLink at {kit.superlink} ({_reason(exc)}). Check that the "
        f"name resolves from this machine, that outbound TCP to port {kit.superlink.port} "
        "is allowed (the node's firewall, its systemd IPAddressAllow=, or its container's "
        "egress relay) and that the coordinator's SuperLink is running. The node did not "
        "connect.")


def _deactivate(client: FleetHttpClient, node_id: int) -> None:
    """Undo an activation the probe was not meant to cause (a Flower that validates the
    interval after activating): the node goes back offline, still registered."""
    client.DeactivateNode(DeactivateNodeRequest(node_id=node_id))


class _RuntimeVersionHeaders:
    """Flower's version headers, as its SuperNode sends them; an incompatibility is read
    from the response (Flower's own interceptor would exit the process instead)."""

    def __init__(self) -> None:
        self._headers = dict(RuntimeVersionMetadata.from_local_component("SuperNode")
                             .as_metadata())

    def intercept(self, context: ProtobufRequestContext, call_next: ProtobufCall
                  ) -> httpx.Response:
        add_headers(context.request, self._headers)
        return call_next(context)


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in `exc`'s chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: httpx.TransportError) -> str:
    """The innermost reason ("Connection refused", "Name or service not known", ...)."""
    inner: BaseException = exc
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(inner) or type(exc).__name__
