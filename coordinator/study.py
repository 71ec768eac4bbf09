"""A study's settings on the coordinator, read from the Flower run config.

The run config carries the study plan's keys (see `protocols.plan`) and:
`schema-path` (empty: the built-in demo registry's schema), `out-dir`
(where checkpoints and the cohort go), `engine` ("simulation" or
"deployment", recorded in the manifest), `round-timeout` (seconds a
round waits for the sites' replies, and for `min-sites` nodes to connect),
`signing-key` (the absolute path of the Ed25519 key that signs the manifest,
for a deployment the coordinator kit's manifest-signing.key; empty: this
user's own key, see `coordinator.provisioning.signing_key`) and, for a deployment,
`superlink-address` and `root-certificates`: the coordinator checks that the
SuperLink serves TLS with a certificate of the consortium CA before it sends
anything, and records it in the manifest. `ledger-heads`: the coordinator's file of
the last ledger head each site reported (`coordinator.ledger_heads`), presented at
the sites' next study; default for a deployment `ledger-heads.json` in the folder
above `out-dir` (beside the other studies), none for a simulation (its nodes are
the harness's own, with fresh ledgers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.ledger_heads import FILE_NAME as HEADS_FILE
from protocols.config import read_path, read_positive, read_text
from protocols.demo_registry import simulate_registry
from protocols.errors import PlanError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.schema import Schema, load_schema, parse_schema

ENGINES = ("simulation", "deployment")


@dataclass(frozen=True)
class StudySettings:
    schema: Schema
    plan: StudyPlan
    out_dir: Path
    engine: str
    round_timeout: float = 600.0
    superlink_address: str = ""
    root_certificates: str = ""
    signing_key: Path | None = None
    ledger_heads: Path | None = None

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any],
                        schema: Schema | None = None) -> StudySettings:
        """The settings of `run_config`; `schema` (already parsed) saves reading
        `schema-path` again."""
        if schema is None:
            schema = _schema(read_text(run_config.get("schema-path")))
        engine = read_text(run_config.get("engine")) or "simulation"
        if engine not in ENGINES:
            raise PlanError(f"Run config: engine = {engine!r} is not one of "
                            f"{', '.join(ENGINES)}.")
        if read_text(run_config.get("study-nonce")):
            raise PlanError("Run config: study-nonce cannot be set: the coordinator draws a "
                            "fresh one when a study starts, and keeps it when the study "
                            "resumes from its checkpoints in out-dir.")
        plan = StudyPlan.from_config(dict(run_config))
        family_for(plan)  # the family's own rules, before the study's key or TLS is touched
        out_dir = read_path(run_config.get("out-dir")) or Path("fedsynth-out")
        heads = read_path(run_config.get("ledger-heads"))
        if heads is None and engine == "deployment":
            heads = out_dir.absolute().parent / HEADS_FILE
        return cls(schema=schema, plan=plan, out_dir=out_dir, ledger_heads=heads,
                   engine=engine,
                   round_timeout=read_positive(run_config.get("round-timeout", 600.0),
                                               "Run config: round-timeout", PlanError),
                   superlink_address=read_text(run_config.get("superlink-address")) or "",
                   root_certificates=read_text(run_config.get("root-certificates")) or "",
                   signing_key=read_path(run_config.get("signing-key")))


def _schema(path: str | None) -> Schema:
    if path:
        return load_schema(path)
    return parse_schema(simulate_registry().schema_yaml, "built-in demo registry")
