"""A checkpoint of the global generator after every round, and resuming from it.

Checkpoints hold only the averaged weights, the per-site ε reported so far and
which sites contributed to which round (no record, nothing a node did not
send), stamped with the study's id (`StudyPlan.fingerprint`: plan, schema and the
study's random nonce) and its nonce. A study that stopped (the ServerApp or the
SuperLink was killed) is resumed from its last checkpoint when it is run again with
the same plan and schema into the same folder, under the same id (the checkpoint's
nonce), so that each node recognises the rounds it already charged; once the cohort
is released, the checkpoints are marked released and a new run starts afresh, a new
study with a nonce of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from protocols.errors import PlanError
from protocols.plan import StudyPlan
from protocols.release.manifest import SitePrivacySpent

log = logging.getLogger(__name__)
RELEASED = "released.json"


@dataclass(frozen=True)
class Checkpoint:
    """The study's state after `round`; `study_nonce`: the nonce of the study's plan."""

    round: int
    arrays: ArrayRecord
    sites: dict[str, SitePrivacySpent]
    contributions: dict[str, list[int]]
    study_nonce: str = ""


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def save_checkpoint(out_dir: Path, study: str, checkpoint: Checkpoint) -> Path:
    """Write round-NNNN.pt (weights) and round-NNNN.json (site reports) atomically."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"round-{checkpoint.round:04d}"
    _atomic(stem.with_suffix(".pt"),
            lambda p: torch.save(checkpoint.arrays.to_torch_state_dict(), p))
    report = {"round": checkpoint.round, "study": study,
              "study_nonce": checkpoint.study_nonce,
              "sites": {name: vars(site) for name, site in checkpoint.sites.items()},
              "contributions": checkpoint.contributions}
    _atomic(stem.with_suffix(".json"), lambda p: p.write_text(json.dumps(report, indent=2)))
    return stem.with_suffix(".pt")


def mark_released(out_dir: Path, study: str) -> None:
    """After the release: a later run of the same study starts afresh."""
    _atomic(checkpoint_dir(out_dir) / RELEASED,
            lambda p: p.write_text(json.dumps({"study": study}) + "\n"))


def resumable(out_dir: Path, plan: StudyPlan, schema_sha256: str) -> Checkpoint | None:
    """The last checkpoint of a study of `plan` (its nonce aside) and schema that stopped
    before its release, else None; the checkpoint carries the study's nonce."""
    folder = checkpoint_dir(out_dir)
    reports = sorted(folder.glob("round-*.json"))
    if not reports or (folder / RELEASED).exists():
        return None
    report = json.loads(reports[-1].read_text(encoding="utf-8"))
    try:
        stopped = replace(plan, study_nonce=str(report.get("study_nonce") or ""))
    except PlanError:  # not a nonce this coordinator drew: not a study to resume
        return None
    if not stopped.study_nonce or report.get("study") != stopped.fingerprint(schema_sha256):
        return None
    return load_checkpoint(out_dir, int(report["round"]))


def load_checkpoint(out_dir: Path, server_round: int) -> Checkpoint:
    stem = checkpoint_dir(out_dir) / f"round-{server_round:04d}"
    report = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    state = torch.load(stem.with_suffix(".pt"), weights_only=True)
    return Checkpoint(round=server_round, arrays=ArrayRecord(torch_state_dict=state),
                      sites={name: SitePrivacySpent(**site)
                             for name, site in report["sites"].items()},
                      contributions={k: list(v) for k, v in
                                     report.get("contributions", {}).items()},
                      study_nonce=str(report.get("study_nonce") or ""))


def clear_checkpoints(out_dir: Path) -> None:
    """Remove the checkpoints of an earlier study before a fresh one writes its own."""
    folder = checkpoint_dir(out_dir)
    stale = [*folder.glob("round-*.pt"), *folder.glob("round-*.json"), folder / RELEASED]
    if any(p.exists() for p in stale):
        log.info("starting a new study in %s: removing the checkpoints of an earlier one",
                 out_dir)
    for path in stale:
        path.unlink(missing_ok=True)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)

