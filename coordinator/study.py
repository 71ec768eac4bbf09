"""A study's settings on the coordinator, read from the Flower run config.

The run config carries the study plan's keys (see `protocols.plan`) and:
`schema-path` (empty: the built-in demo registry's schema), `out-dir`
(where checkpoints and the cohort go), `engine` (recorded in the manifest) and
`federated-evaluation` (default true: after the release every site scores the
cohort against its records and returns scalar scores for the study's report).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.demo_registry import simulate_registry
from protocols.plan import StudyPlan
from protocols.schema import Schema, load_schema, parse_schema


@dataclass(frozen=True)
class StudySettings:
    schema: Schema
    plan: StudyPlan
    out_dir: Path
    engine: str
    federated_evaluation: bool = True

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> StudySettings:
        schema_path = str(run_config.get("schema-path", "") or "")
        schema = (load_schema(schema_path) if schema_path else
                  parse_schema(simulate_registry().schema_yaml, "built-in demo registry"))
        return cls(schema=schema, plan=StudyPlan.from_config(dict(run_config)),
                   out_dir=Path(str(run_config.get("out-dir", "fedsynth-out"))),
                   engine=str(run_config.get("engine", "simulation")),
                   federated_evaluation=_flag(run_config.get("federated-evaluation", True)))


def _flag(value: Any) -> bool:
    """A run-config boolean: TOML gives a bool, a command line may give text."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
