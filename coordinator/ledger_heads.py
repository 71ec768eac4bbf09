"""The last ledger head each site reported to this coordinator, kept between studies.

Every signed manifest records, per site, the head of that site's privacy ledger after
its last answer (`ledger_heads`). The coordinator also keeps the latest head of each
site in one small JSON file of its own (`ledger-heads.json`, beside the studies'
folders of a deployment), and presents it in the plan record of the site's next study
(`protocols.messages.LEDGER_HEADS`): a node whose ledger no longer holds that entry
(deleted, cut short, rewritten) refuses to train, and its operator is told why.

The heads are not secret. The file is the coordinator's word about the sites, so it
only ever makes a node refuse: a head lost from it only loses that check. A site whose
ledger really had to be rebuilt (its operator confirms it by another channel) is taken
out of the file by hand, and that site's earlier spending is then on its operator's word.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.privacy.ledger import is_head

log = logging.getLogger(__name__)
FILE_NAME = "ledger-heads.json"


def read_known_heads(path: Path | None) -> dict[str, str]:
    """Site -> last head reported (empty when the coordinator keeps none yet)."""
    if path is None or not path.exists():
        return {}
    try:
        heads = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FedsynthError(f"Cannot read the sites' ledger heads {path} ({exc}); restore it "
                            "from the last studies' manifests (their ledger_heads) before "
                            "the next study.") from None
    if not (isinstance(heads, dict)
            and all(_plain(name) and is_head(head) for name, head in heads.items())):
        raise FedsynthError(f"{path} is not a map of site names to ledger heads (64 hex "
                            "digits); restore it from the last studies' manifests.")
    return heads


def record_heads(path: Path | None, reported: Mapping[str, str]) -> None:
    """Merge the heads the sites reported in a released study into `path` (atomically)."""
    if path is None:
        return
    heads = read_known_heads(path)
    for name, head in reported.items():
        if _plain(name) and is_head(head):
            heads[name] = head
        elif head:
            log.warning("ledger head of site %r not kept: not a plain site name", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(heads, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def presented(heads: Mapping[str, str]) -> dict[str, list[str]]:
    """The plan record's entry presenting `heads` to the nodes (none: nothing to add)."""
    if not heads:
        return {}
    return {keys.LEDGER_HEADS: [f"{name}={head}" for name, head in sorted(heads.items())]}


def _plain(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 64 and "=" not in name
