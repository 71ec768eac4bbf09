"""A site's node-auth key: how it is made, how its public half is read, how it is named.

The key proves to the SuperLink that a node is the site it claims to be. It is the key
type Flower's SuperNode authentication reads: EC P-384, the private half an unencrypted
OpenSSH private key (`flower-supernode --auth-supernode-private-key`), the public half one
OpenSSH line (`flwr supernode register`). The hospital makes it (`fedsynth-node keygen`)
and sends only the public half; the coordinator enrols that (`fedsynth-coordinator
provision --site NAME=PATH.pub`). Both sides name a key by the same fingerprint, the one
`ssh-keygen -lf node-auth.pub` prints, so two people can compare it over the phone.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.kit_layout import KitError

CURVE = ec.SECP384R1
KEY_TYPE = "ecdsa-sha2-nistp384"
MAX_PUBLIC_KEY_BYTES = 4096  # one P-384 line is about 200 bytes
PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"  # ends every PEM/OpenSSH private key's armour line


@dataclass(frozen=True)
class NodeAuthPublicKey:
    """A site's public node-auth key as one canonical OpenSSH line (no comment)."""

    line: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.line)

    @property
    def file_bytes(self) -> bytes:
        """What a `.pub` file holds: the line and a newline."""
        return self.line + b"\n"


@dataclass(frozen=True)
class NodeAuthKeyPair:
    """Both halves, encoded for their files: the private one secret, the public one not."""

    private: bytes
    public: NodeAuthPublicKey


def new_node_auth_key_pair() -> NodeAuthKeyPair:
    """A fresh EC P-384 key pair in the OpenSSH encodings Flower reads."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return NodeAuthKeyPair(private, _public_line(key.public_key()))


def fingerprint(line: bytes) -> str:
    """`SHA256:<base64>` of the key blob, as `ssh-keygen -l` prints it."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def public_key_of(private_key: ec.EllipticCurvePrivateKey) -> NodeAuthPublicKey:
    """The public half of a loaded private key, in the same canonical form."""
    return _public_line(private_key.public_key())


def read_public_key_file(path: Path) -> NodeAuthPublicKey:
    """Read a site's `.pub` file; refuse anything but one OpenSSH EC P-384 public key.

    Each refusal is one paragraph naming the file and the rule. A private key sent by
    mistake gets its own message: it must not be enrolled, and it is exposed.
    """
    try:
        if not path.is_file():
            raise _bad(path, "it does not exist or is not a file")
        if path.stat().st_size > MAX_PUBLIC_KEY_BYTES:
            raise _bad(path, f"it is larger than {MAX_PUBLIC_KEY_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise _bad(path, f"it cannot be read ({exc.strerror})") from None
    if PRIVATE_KEY_MARKER in data:
        raise KitError(
            f"{path} holds a PRIVATE key, not a public one. A site's private key must never "
            "leave the hospital, so it is not enrolled and nothing was written. Tell the site "
            "that this key is exposed: it should make a new pair with `fedsynth-node keygen` "
            "and send only the node-auth.pub it prints.")
    lines = [line for line in data.splitlines() if line.strip()]
    if len(lines) != 1:
        raise _bad(path, f"it has {len(lines)} non-empty lines, not exactly one")
    fields = lines[0].split()
    if fields[0] != KEY_TYPE.encode():
        raise _bad(path, f"its key type is {fields[0].decode(errors='replace')!r}, "
                         f"not {KEY_TYPE!r} (EC P-384)")
    try:
        key = serialization.load_ssh_public_key(b" ".join(fields[:2]))
    except (ValueError, UnsupportedAlgorithm, IndexError):
        raise _bad(path, "its key data does not decode") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, CURVE):
        raise _bad(path, "it is not an EC P-384 key")
    return _public_line(key)


def _public_line(key: ec.EllipticCurvePublicKey) -> NodeAuthPublicKey:
    return NodeAuthPublicKey(key.public_bytes(serialization.Encoding.OpenSSH,
                                              serialization.PublicFormat.OpenSSH))


def _bad(path: Path, reason: str) -> KitError:
    return KitError(
        f"{path} is not a node-auth public key: {reason}. A site's public key file is one "
        f"line `{KEY_TYPE} AAAA...` (an OpenSSH EC P-384 key), the node-auth.pub that "
        "`fedsynth-node keygen` writes at the hospital. Nothing was written.")
