"""Signing a cohort manifest, and checking a released cohort against it.

The coordinator signs the manifest with an Ed25519 key; the signature covers
the canonical JSON of every manifest field except the signature block (sorted
keys, compact separators, ASCII escapes, no NaN), so it covers the sha256 and
size of every cohort file the manifest lists. Anyone holding the folder can
then check that no file was edited, cut short, removed or added since release.

The signature block carries the signer's public key, so a manifest can be
checked on its own. That proves integrity, not authorship: whoever edits a
manifest can re-sign it with a key of their own. Authorship needs the
consortium's published key (a site kit's `manifest-signing.pub`), given as
`trusted_public_key`, or a comparison of the printed fingerprint with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

from protocols.errors import FedsynthError

SIGNATURE = "signature"
ALGORITHM = "Ed25519"


class SignatureError(FedsynthError):
    """A manifest's signature block is missing, malformed or does not verify."""


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed: the manifest without its signature block."""
    content = {key: value for key, value in manifest.items() if key != SIGNATURE}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, hex: what a person compares by eye."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The SubjectPublicKeyInfo PEM, the format of a kit's `manifest-signing.pub`."""
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_BLOCK_KEYS = frozenset({"algorithm", "public_key", "key_fingerprint", "value"})


def sign_manifest(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """`manifest` with a signature block over everything else in it."""
    public = key.public_key()
    block = {"algorithm": ALGORITHM, "public_key": public_key_pem(public),
             "key_fingerprint": key_fingerprint(public),
             "value": base64.b64encode(key.sign(canonical_bytes(manifest))).decode("ascii")}
    return {**{k: v for k, v in manifest.items() if k != SIGNATURE}, SIGNATURE: block}


def parse_public_key(pem: bytes, source: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; `SignatureError` naming `source` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{source} is not an Ed25519 public key in PEM format (like the "
                             "manifest-signing.pub of a kit made by `fedsynth-coordinator "
                             "provision`).")
    return key


def check_signature(manifest: Mapping[str, Any]) -> Ed25519PublicKey:
    """The key that signed `manifest`; `SignatureError` if it is unsigned, its block is
    malformed, or the signature does not match the content (the manifest was edited)."""
    block = manifest.get(SIGNATURE)
    if block is None:
        raise SignatureError("not signed (no signature block): nothing shows these files "
                             "are the ones the coordinator released")
    if (not isinstance(block, Mapping) or set(block) != _BLOCK_KEYS
            or block.get("algorithm") != ALGORITHM):
        raise SignatureError(f"the signature block is malformed (expected exactly "
                             f"{', '.join(sorted(_BLOCK_KEYS))}, algorithm {ALGORITHM!r}); "
                             "anything else in it would not be covered by the signature")
    key = parse_public_key(str(block.get("public_key", "")).encode(), "the signature block's "
                           "public_key")
    if block.get("key_fingerprint") != key_fingerprint(key):
        raise SignatureError("the signature block's key_fingerprint is not the fingerprint "
                             "of its public_key")
    try:
        value = base64.b64decode(str(block.get("value", "")), validate=True)
        key.verify(value, canonical_bytes(manifest))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError("the signature does not match the manifest's content: the "
                             "manifest was edited after it was signed") from None
    return key
