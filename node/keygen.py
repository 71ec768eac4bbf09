"""`fedsynth-node keygen`: the site's node-auth key pair, made at the hospital.

The private half never leaves this machine: it is written owner-only (mode 0600 from
its first byte, never chmod-ed afterwards) and an existing key is never replaced, since
replacing it would lock the node out of the consortium until the coordinator enrols the
new one. Only the public half goes to the coordinator, who enrols it with
`fedsynth-coordinator provision --site NAME=node-auth.pub`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from protocols import kit_layout as layout
from protocols.kit_layout import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_FILE, KitError
from protocols.node_keys import NodeAuthPublicKey, new_node_auth_key_pair


@dataclass(frozen=True)
class WrittenKeyPair:
    """Where keygen put the two halves, and the public key's fingerprint."""

    private_path: Path
    public_path: Path
    public: NodeAuthPublicKey


def write_node_auth_key_pair(out: Path) -> WrittenKeyPair:
    """Write `out/node-auth.key` and `out/node-auth.pub`; refuse if either exists."""
    private_path, public_path = out / layout.NODE_AUTH_KEY, out / layout.NODE_AUTH_PUB
    existing = [p for p in (private_path, public_path) if p.exists() or p.is_symlink()]
    if existing:
        raise KitError(f"{existing[0]} already exists; keygen never replaces a key (the node "
                       "would be locked out until the coordinator enrolled the new one). To "
                       "replace a lost or exposed key on purpose, move the old pair away first, "
                       "then send the new node-auth.pub to the coordinator.")
    try:
        out.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"Cannot create the folder {out}: {exc.strerror}.") from None
    pair = new_node_auth_key_pair()
    try:
        _write_new(private_path, pair.private, PRIVATE_FILE)
        try:
            _write_new(public_path, pair.public.file_bytes, PUBLIC_FILE)
        except BaseException:
            private_path.unlink(missing_ok=True)  # a private key without its public half
            raise
    except FileExistsError as exc:
        raise KitError(f"{exc.filename} appeared while keygen ran (is another keygen "
                       "running?); no key was replaced.") from None
    except OSError as exc:
        raise KitError(f"Cannot write {exc.filename}: {exc.strerror}.") from None
    return WrittenKeyPair(private_path.resolve(), public_path.resolve(), pair.public)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with its final mode from the start; fail if anything is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
