"""Calling the node's ClientApp the way Flower does, on real files: messages and contexts.

Shared by the ClientApp tests and the attack reproductions (tests/node/ is on
sys.path, as pytest puts it for rootless tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from protocols import messages as keys
from protocols.encoding import TableEncoding, build_encoding
from protocols.generators.vae.model import build_generator, featurize
from protocols.plan import StudyPlan
from protocols.schema import Schema


def issued(plan: StudyPlan) -> StudyPlan:
    """`plan` as a coordinator sends it, with a study nonce. A plan without one gets the
    same nonce every time (derived from the plan), so that a test's messages of one plan
    are one study, as one coordinator's messages of one study are; `StudyPlan.issued`
    draws a fresh one, for a second study of the same plan."""
    if plan.study_nonce:
        return plan
    text = json.dumps(plan.to_config(), sort_keys=True)
    return replace(plan, study_nonce=hashlib.sha256(text.encode()).hexdigest()[:32])


def train_message(schema: Schema, plan: StudyPlan, schema_hash: str | None = None,
                  server_round: int = 1, arrays: ArrayRecord | None = None
                  ) -> tuple[Message, Any]:
    """A training message for `plan` (`issued`) with the plan's initial VAE (or `arrays`)."""
    model = build_generator(build_encoding(schema), plan.hidden, plan.latent, plan.seed)
    config = ConfigRecord({**issued(plan).to_config(),
                           keys.SCHEMA_SHA256: schema_hash or schema.sha256,
                           keys.SERVER_ROUND: server_round})
    content = RecordDict({keys.ARRAYS: arrays or ArrayRecord(model.state_dict()),
                          keys.PLAN: config})
    return Message(content=content, dst_node_id=1, message_type="train"), model


def node_context(schema_path: Path, data_path: Path, **node_config: Any) -> Context:
    """A deployed node's context: its files, its ledger folder beside the records."""
    state_dir = Path(data_path).parent / "node-state"
    return Context(run_id=1, node_id=1, node_config={"schema-path": str(schema_path),
                                                     "data-path": str(data_path),
                                                     "state-dir": str(state_dir),
                                                     "epsilon-budget": 100.0,
                                                     "delta-budget": 1e-3,
                                                     **node_config},
                   state=RecordDict(), run_config={})


def tripwire_state(encoding: TableEncoding, plan: StudyPlan, patient: np.ndarray,
                   scale: float) -> dict[str, torch.Tensor]:
    """The plan's initial VAE, rewired so that its first hidden unit fires for `patient`
    (one encoded record) only, with weights of `scale` after it: at 1e20 that patient's
    loss overflows to inf (the review's crafted global model)."""
    features = featurize(encoding, torch.as_tensor(patient.reshape(1, -1),
                                                   dtype=torch.float32))[0]
    model = build_generator(encoding, plan.hidden, plan.latent, plan.seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.0.weight"][0] = scale * (2 * features - 1)
    state["encoder.0.bias"][0] = -scale * (features.sum() - 0.5)
    state["encoder.2.weight"][:, 0] = scale
    return state
