"""A study's checkpoints: a study resumed from them keeps its id; a new one gets its own."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord

from coordinator.checkpoints import Checkpoint, mark_released, resumable, save_checkpoint
from protocols.plan import StudyPlan

SCHEMA = "ab" * 32
PLAN = StudyPlan(epsilon=2.0, rounds=3)


def _stopped_after_round_1(out, plan: StudyPlan) -> None:
    arrays = ArrayRecord(torch_state_dict={"w": torch.zeros(3)})
    save_checkpoint(out, plan.fingerprint(SCHEMA),
                    Checkpoint(1, arrays, {}, {"siteA": [1]}, plan.study_nonce))


def test_a_resumed_study_keeps_its_nonce_and_so_its_id(tmp_path):
    """Run again with the same plan and schema (as the user wrote it: no nonce), the study
    resumes under the id its sites charged round 1 to."""
    issued = PLAN.issued()
    _stopped_after_round_1(tmp_path, issued)
    resumed = resumable(tmp_path, PLAN, SCHEMA)
    assert resumed is not None and resumed.round == 1
    assert resumed.study_nonce == issued.study_nonce
    assert resumed.contributions == {"siteA": [1]}


def test_another_plan_or_schema_or_a_released_study_starts_afresh(tmp_path):
    _stopped_after_round_1(tmp_path, PLAN.issued())
    assert resumable(tmp_path, PLAN.with_overrides(rounds=4), SCHEMA) is None
    assert resumable(tmp_path, PLAN, "cd" * 32) is None
    mark_released(tmp_path, "whatever")
    assert resumable(tmp_path, PLAN, SCHEMA) is None


def test_a_checkpoint_whose_nonce_is_missing_or_malformed_is_not_resumed(tmp_path):
    """A checkpoint from before studies had nonces, or edited by hand, names no study this
    coordinator drew: the study starts afresh rather than under a guessed id."""
    _stopped_after_round_1(tmp_path, PLAN)  # no nonce
    assert resumable(tmp_path, PLAN, SCHEMA) is None
    report = tmp_path / "checkpoints" / "round-0001.json"
    report.write_text(report.read_text().replace('"study_nonce": ""',
                                                 '"study_nonce": "not-a-nonce"'))
    assert resumable(tmp_path, PLAN, SCHEMA) is None


def test_a_run_config_cannot_set_the_study_nonce(tmp_path):
    """Only the coordinator draws it (an empty one, as a plan's config carries it, is no
    setting); a nonce someone chose could repeat another study's id."""
    from coordinator.study import StudySettings
    from protocols.errors import PlanError

    config = {**PLAN.to_config(), "out-dir": str(tmp_path)}
    assert StudySettings.from_run_config(config).plan == PLAN
    with pytest.raises(PlanError, match="study-nonce cannot be set"):
        StudySettings.from_run_config({**config, "study-nonce": "ab" * 16})
