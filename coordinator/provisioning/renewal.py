"""Renewing the SuperLink's TLS certificate under the same CA, without touching a site kit.

Nodes trust the consortium CA (`ca.pem` in every kit), not the SuperLink certificate
itself, so a new certificate signed by the same CA is accepted by every node as it is.
`renew_certificate` issues one with a fresh key for the consortium's address, valid from
now for `valid_days` but never beyond the CA's own expiry, and replaces `superlink.pem`
and `superlink.key` (the key owner-only from its first byte). It needs `ca.key`, which
the operator may keep offline between renewals; the running SuperLink serves the new
certificate once restarted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from coordinator.provisioning import certificates as certs
from coordinator.provisioning.consortium import (CONSORTIUM_TOML, coordinator_docs,
                                                 read_consortium)
from coordinator.provisioning.kit_staging import KitFile, replace_file
from protocols import kit_layout as kit
from protocols.kit_layout import KitError

CA_KEY = "ca.key"
SUPERLINK_CERT = "superlink.pem"
SUPERLINK_KEY = "superlink.key"


@dataclass(frozen=True)
class Renewal:
    """The new certificate's validity, for the CLI to report."""

    certificate: Path
    valid_from: dt.datetime
    valid_until: dt.datetime
    ca_valid_until: dt.datetime
    capped_by_ca: bool  # the CA expires before the period asked for


def renew_certificate(out: Path, valid_days: int, now: dt.datetime | None = None) -> Renewal:
    """Replace the SuperLink certificate in the kits folder `out` with a new one."""
    now = now or dt.datetime.now(dt.timezone.utc)
    coordinator_dir = out / kit.COORDINATOR_KIT
    consortium = read_consortium(coordinator_dir)
    if valid_days < 1:
        raise KitError(f"--valid-days must be at least 1, not {valid_days}.")
    ca = _load_ca(coordinator_dir)
    if consortium.ca_valid_until <= now + dt.timedelta(days=1):
        raise KitError(f"The consortium CA ({coordinator_dir / kit.CA_CERT}) expires on "
                       f"{consortium.ca_valid_until:%Y-%m-%d}: a certificate it signs would not "
                       "outlive it. Provision a new consortium (new kits for every site). "
                       "Nothing was changed.")
    new = certs.superlink_certificate(ca, consortium.address, now, valid_days)
    _replace_pair(coordinator_dir, new)
    valid_until = certs.certificate_expiry(new.cert_pem)
    renewed = replace(consortium, valid_until=valid_until)
    docs = coordinator_docs(renewed, coordinator_dir, None)
    replace_file(coordinator_dir / CONSORTIUM_TOML, docs[CONSORTIUM_TOML])
    return Renewal(coordinator_dir / SUPERLINK_CERT, now, valid_until,
                   consortium.ca_valid_until,
                   capped_by_ca=consortium.ca_valid_until < now + dt.timedelta(days=valid_days))


def _load_ca(coordinator_dir: Path) -> certs.CertifiedKey:
    cert_path, key_path = coordinator_dir / kit.CA_CERT, coordinator_dir / CA_KEY
    if not key_path.is_file():
        raise KitError(f"{key_path} is not there: renewing the SuperLink certificate needs the "
                       "CA's private key. If you keep it offline, put it back for the renewal "
                       "(and take it away again after). Nothing was changed.")
    try:
        return certs.load_ca(cert_path.read_bytes(), key_path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise KitError(f"{cert_path} and {key_path} are not a usable CA certificate and its "
                       f"private key ({exc}); restore them from your backup. Nothing was "
                       "changed.") from None


def _replace_pair(coordinator_dir: Path, new: certs.CertifiedKey) -> None:
    """Key first, then certificate; if the certificate cannot be replaced, the old key
    is put back, so the two files always belong together."""
    key_path, cert_path = coordinator_dir / SUPERLINK_KEY, coordinator_dir / SUPERLINK_CERT
    old_key = key_path.read_bytes()
    try:
        replace_file(key_path, KitFile(new.key_pem, secret=True))
        try:
            replace_file(cert_path, KitFile(new.cert_pem))
        except BaseException:
            replace_file(key_path, KitFile(old_key, secret=True))
            raise
    except OSError as exc:
        raise KitError(f"Cannot write {exc.filename} ({exc.strerror}); the SuperLink "
                       "certificate was not renewed.") from None
