"""Checking, before a deployment study sends anything, that the SuperLink serves TLS.

The ServerApp cannot see how the SuperLink was started, so it checks for
itself: a TLS handshake with the SuperLink's address that verifies the
certificate against the consortium CA and the host name. A SuperLink that
answers in plaintext, or with a certificate the CA did not sign, stops the
study; the manifest's `"tls": true` records a check that passed.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from protocols.errors import FedsynthError
from protocols.kit_layout import parse_address


def verify_tls(address: str, ca_path: str, timeout: float = 10.0) -> None:
    """Raise `FedsynthError` unless `address` completes a verified TLS handshake."""
    if not address or not ca_path:
        raise FedsynthError("A deployment study needs 'superlink-address' and "
                            "'root-certificates' in its run config, so the coordinator can "
                            "check that the SuperLink serves TLS before any site is contacted.")
    superlink = parse_address(address)  # the same rule as the kits' SuperLink address
    if not Path(ca_path).is_file():
        raise FedsynthError(f"Run config: root-certificates = {ca_path!r} is not a file.")
    context = ssl.create_default_context(cafile=ca_path)
    try:
        with socket.create_connection((superlink.host, superlink.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=superlink.host):
                pass
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise FedsynthError(f"The SuperLink at {address} did not complete a TLS handshake "
                            f"verified by {ca_path} ({exc}); the study stops before any site "
                            "is contacted. Start the SuperLink with the consortium "
                            "certificate, never --insecure.") from None
    except OSError as exc:
        raise FedsynthError(f"Cannot reach the SuperLink at {address} to check its TLS: "
                            f"{exc}.") from None
