"""Replacing a node's state file so that a crash or power loss leaves the old file or the new
one, never a mix: the new bytes are written to a temporary file and synced first (by the
caller), then renamed over the old, and the rename itself is synced."""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(tmp: Path, path: Path) -> None:
    """Move the written and synced `tmp` over `path`, and sync the folder's rename."""
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)
