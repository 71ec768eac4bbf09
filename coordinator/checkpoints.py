"""A checkpoint of the global generator after every round.

Checkpoints hold only the averaged weights and the per-site ε reported so far
(no record, nothing a node did not send), so the study can be inspected or
resumed from the last completed round.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from protocols.manifest import SitePrivacySpent


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def save_checkpoint(out_dir: Path, server_round: int, arrays: ArrayRecord,
                    sites: Mapping[str, SitePrivacySpent]) -> Path:
    """Write round-NNNN.pt (weights) and round-NNNN.json (site reports) atomically."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"round-{server_round:04d}"
    _atomic(stem.with_suffix(".pt"), lambda p: torch.save(arrays.to_torch_state_dict(), p))
    report = {name: vars(site) for name, site in sites.items()}
    _atomic(stem.with_suffix(".json"),
            lambda p: p.write_text(json.dumps({"round": server_round, "sites": report}, indent=2)))
    return stem.with_suffix(".pt")


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
