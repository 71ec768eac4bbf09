"""Anchoring the privacy ledger outside itself, so that a rollback is noticed.

The hash chain shows an entry edited or removed in the middle, but not a ledger cut
short, deleted, or rewritten whole with a recomputed chain: each of those reads as a
valid chain, with less spent. So the ledger's head (the hash of its last entry) is
also kept where the state folder does not reach:
- in the node's head file (`ledger-head`, in the kit folder unless node.toml names
  another place), rewritten atomically after every entry: a state folder lost,
  replaced, or restored from an older backup no longer holds it, and the node
  refuses at once, with no coordinator involved;
- in the coordinator's signed manifests, which record the head each site reported at
  release; at the site's next study the coordinator presents the last one it saw
  (`protocols.messages.LEDGER_HEADS`).
A ledger that no longer holds either head is refused before anything is reserved or
trained, and `fedsynth-node budget` exits non-zero on it.

A head is not secret and proves nothing on its own: a coordinator that presents a
forged or unknown head can only make the node refuse (as if it had not asked), never
make it train, spend, or skip a check. A node with no head file adopts its ledger's
current head (a node that never trained, or one that ran before heads were kept);
from then on its own file anchors it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.ledger.durable import replace_durably
from protocols import messages as keys
from protocols.errors import BudgetError, PlanError
from protocols.privacy.ledger import LedgerEntry, holds_head, is_head, last_hash


@dataclass(frozen=True)
class LedgerAnchor:
    """Where this node keeps its head (None in a simulation) and the head the coordinator
    presented for this site (None when it presented none)."""

    head_file: Path | None = None
    presented: str | None = None


def read_head_file(path: Path) -> str | None:
    """The head kept in `path`; None when there is no such file yet."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BudgetError(f"Cannot read the node's ledger head file {path} ({exc}); the "
                          "node refuses to train until an operator restores it.") from None
    if not is_head(text):
        raise BudgetError(f"{path} is not a ledger head file (one line of 64 hex digits); "
                          "the node refuses to train until an operator restores it.")
    return text


def write_head_file(path: Path, head: str) -> None:
    """Replace `path` with `head`, atomically and durably (write, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(head + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    replace_durably(tmp, path)


def rollback_problem(entries: Sequence[LedgerEntry], head: str, ledger_path: Path,
                     who: str) -> str | None:
    """Why the ledger cannot be trusted because it lost `head`, or None if it holds it."""
    if holds_head(entries, head):
        return None
    return (f"{ledger_path}: the privacy ledger no longer holds the entry {head[:16]}... "
            f"that {who} recorded as its latest (the ledger now has {len(entries)} "
            f"entries). It was deleted, cut short or rewritten since (restored from an "
            "older backup, a lost or replaced state folder, a `docker compose down -v`), so "
            "what this site has already spent cannot be known, and the node refuses every "
            "study until an operator restores the ledger that holds that entry. Do not "
            "start a new, empty ledger: the epsilon of earlier studies would be spent again.")


def check_anchor(entries: Sequence[LedgerEntry], anchor: LedgerAnchor,
                 ledger_path: Path) -> None:
    """Refuse a ledger that lost its own kept head or the coordinator's; adopt the
    current head when the node keeps none yet."""
    if anchor.head_file is not None:
        kept = read_head_file(anchor.head_file)
        if kept is None:
            if entries:
                write_head_file(anchor.head_file, last_hash(entries))
        else:
            problem = rollback_problem(entries, kept, ledger_path,
                                       f"this node's head file {anchor.head_file}")
            if problem:
                raise BudgetError(problem)
    if anchor.presented is not None:
        problem = rollback_problem(entries, anchor.presented, ledger_path,
                                   "the consortium coordinator (from the signed manifest of "
                                   "this site's last released study)")
        if problem:
            raise BudgetError(problem)


def presented_head(plan_config: Mapping[str, Any], site: str) -> str | None:
    """The head the coordinator presents for `site` in a training message's plan record
    ("SITE=HEAD" texts), or None. A list that is not of that form is refused: the node
    reads nothing else from it."""
    listed = plan_config.get(keys.LEDGER_HEADS)
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        raise PlanError("The coordinator's ledger heads are not a list of SITE=HEAD texts; "
                        "the node refuses the message.")
    found = None
    for item in listed:
        name, _, head = item.partition("=")
        if not is_head(head) or (name == site and found is not None and found != head):
            raise PlanError(f"The coordinator's ledger heads hold {item[:80]!r}, not one "
                            "SITE=HEAD (64 hex digits) per site; the node refuses the "
                            "message.")
        if name == site:
            found = head
    return found
