"""The last answer a node gave in each study, kept so it can be given again.

A coordinator that crashed and resumed from its last checkpoint asks again
for a round the node may already have answered. If the global model it sends
is the same (same SHA-256), the node replays its stored answer: that is the
same release, so it costs no privacy. Only the latest round of each study is
kept. These files hold DP outputs and stay in the node's state folder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from node.ledger.durable import replace_durably
from protocols.errors import BudgetError


@dataclass(frozen=True)
class StoredAnswer:
    round: int
    model_sha256: str
    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]


def model_sha256(arrays: ArrayRecord) -> str:
    """SHA-256 over the layer names, dtypes, shapes and bytes of a model."""
    digest = hashlib.sha256()
    for name, array in sorted(arrays.items()):
        value = np.ascontiguousarray(array.numpy())
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _path(state_dir: Path, study: str) -> Path:
    return Path(state_dir) / "answers" / f"{study}.pt"


def store_answer(state_dir: Path, study: str, answer: StoredAnswer) -> None:
    path = _path(state_dir, study)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        torch.save({"round": answer.round, "model_sha256": answer.model_sha256,
                    "arrays": {k: torch.from_numpy(np.array(v)) for k, v in answer.arrays.items()},
                    "metrics": dict(answer.metrics)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    replace_durably(tmp, path)


def stored_answer(state_dir: Path, study: str) -> StoredAnswer | None:
    path = _path(state_dir, study)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, OSError, KeyError, pickle.UnpicklingError) as exc:
        raise BudgetError(f"{path}: the node's stored answer for this study cannot be read "
                          f"({exc.__class__.__name__}); the node refuses to answer until an "
                          "operator restores or removes it.") from None
    return StoredAnswer(round=int(saved["round"]), model_sha256=str(saved["model_sha256"]),
                        arrays={k: v.numpy() for k, v in saved["arrays"].items()},
                        metrics={k: float(v) for k, v in saved["metrics"].items()})
