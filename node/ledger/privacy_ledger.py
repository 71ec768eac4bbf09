"""The node's privacy ledger on disk: `STATE_DIR/privacy-ledger.jsonl`.

Append-only: entries are only ever added, one line each, under an exclusive
file lock, and flushed to disk before the node replies, so a round is on the
ledger before its update leaves. The format and the chain check are in
`protocols.privacy.ledger`; a broken chain is refused on every read. After each
entry the new head is written to the node's head file, outside the state folder
(`node.ledger.anchor`), so a ledger rolled back is refused too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from node.ledger.anchor import write_head_file
from protocols.errors import BudgetError
from protocols.privacy.ledger import LedgerEntry, entry_line, last_hash, parse_ledger, read_chain

LEDGER_NAME = "privacy-ledger.jsonl"
LOCK_NAME = "privacy-ledger.lock"


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """Hold the site's ledger lock: one study round at a time reads, checks, trains and
    charges, so two runs in flight cannot both pass the budget or both train a round."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(Path(state_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


class PrivacyLedger:
    """One site's ledger file."""

    def __init__(self, state_dir: Path, head_file: Path | None = None) -> None:
        self.path = Path(state_dir) / LEDGER_NAME
        self.head_file = head_file

    def entries(self) -> list[LedgerEntry]:
        """Every entry; `BudgetError` naming the first line that breaks the chain."""
        return parse_ledger(self._lines(), str(self.path))

    def chain(self) -> tuple[list[LedgerEntry], BudgetError | None]:
        """The entries up to the first line that breaks the chain, and the error naming
        that line (None when the whole chain holds): what `fedsynth-node budget` shows."""
        return read_chain(self._lines(), str(self.path))

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        # A damaged byte becomes U+FFFD, which breaks that line's hash: the chain check
        # names the line instead of the reader failing on it.
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if line.strip()]

    def append(self, entry: LedgerEntry) -> LedgerEntry:
        """Chain `entry` to the last line and write it durably; returns it as written."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            chained = replace(entry, prev=last_hash(self.entries()))
            line = entry_line(chained)
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            if self.head_file is not None:
                write_head_file(self.head_file, json.loads(line)["hash"])
        return chained


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
