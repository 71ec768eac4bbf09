"""The coordinator's manifest-signing key: the consortium's, or one kept per user.

A deployment study signs with the key `fedsynth-coordinator provision` wrote
(`kits/coordinator/manifest-signing.key`, whose public half every site kit
holds). Without one (a demo, a simulation on your own files), the coordinator
generates an Ed25519 key once and keeps it, with its public half, at
`$XDG_CONFIG_HOME/fedsynth/manifest-signing.key` (default `~/.config/...`), so
every cohort this user releases carries the same fingerprint.

A key file is refused when others may read it, or when it is not an
unencrypted Ed25519 private key in PEM: a signature is worth only as much as
the secrecy of its key.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.provisioning.certificates import manifest_signing_key_pair
from protocols.errors import FedsynthError
from protocols.release.signing import key_fingerprint

KEY_NAME = "manifest-signing.key"
PUBLIC_NAME = "manifest-signing.pub"


@dataclass(frozen=True)
class SigningKey:
    """A loaded signing key, where it came from, and whether it was just made."""

    key: Ed25519PrivateKey
    path: Path
    created: bool = False

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key.public_key())


def default_key_path() -> Path:
    """Where this user's own signing key lives (XDG config folder)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "fedsynth" / KEY_NAME


def signing_key(path: Path | None) -> SigningKey:
    """The key at `path`, or this user's default key, generated on first use."""
    if path is not None:
        return SigningKey(load_signing_key(path), path)
    default = default_key_path()
    created = _create_once(default)
    return SigningKey(load_signing_key(default), default, created)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load an owner-only, unencrypted Ed25519 private key (PKCS8 PEM)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise FedsynthError(f"Cannot read the manifest-signing key {path}: "
                            f"{exc.strerror}.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FedsynthError(f"The manifest-signing key {path} is accessible to group or others "
                            f"(mode {stat.S_IMODE(mode):04o}); anyone who reads it can sign "
                            f"cohorts in the consortium's name. Fix it with: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise FedsynthError(f"{path} is not an unencrypted Ed25519 private key in PEM format; "
                            "use the coordinator kit's manifest-signing.key from "
                            "`fedsynth-coordinator provision`.")
    return key


def _create_once(path: Path) -> bool:
    """Write a new key pair at `path` unless one is there; True if this call wrote it.

    The key is owner-only from its first byte (created with mode 0600, never
    chmod-ed later) and appears complete or not at all: it is written to a
    temporary name and hard-linked into place, which fails if another process
    got there first (then both use that one)."""
    if path.exists():
        return False
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pair = manifest_signing_key_pair()
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pair.private)
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        path.with_name(PUBLIC_NAME).write_bytes(pair.public)
    except OSError as exc:
        raise FedsynthError(f"Cannot create this coordinator's manifest-signing key at {path}: "
                            f"{exc.strerror}. Name an existing key (--signing-key, or `signing-key` "
                            "in the run config) or set XDG_CONFIG_HOME to a writable "
                            "folder.") from None
    return True
