"""Evaluation roles declared in a schema: a target column and a survival pair.

A schema may say which column an analysis predicts (`target`) and which two
columns form a time-to-event outcome (`survival: {time, event}`). These roles
steer the evaluation report (train-on-synthetic-test-on-real, Kaplan–Meier and
Cox agreement); they are not part of the data contract, so, like
descriptions, they are left out of the schema hash.

    evaluation:
      target: cens
      survival: {time: time, event: cens}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.errors import SchemaError
from protocols.schema_columns import Column

_ROLE_KEYS = {"target", "survival"}


@dataclass(frozen=True)
class EvaluationRoles:
    """Which columns the evaluation predicts; both optional."""

    target: str | None = None
    survival_time: str | None = None
    survival_event: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a study predicts: the target, then the survival time and event
        (those declared)."""
        return tuple(name for name in (self.target, self.survival_time, self.survival_event)
                     if name is not None)

    @property
    def survival(self) -> tuple[str, str] | None:
        if self.survival_time is None or self.survival_event is None:
            return None
        return self.survival_time, self.survival_event


def parse_roles(raw: Any, columns: tuple[Column, ...], source: str) -> EvaluationRoles:
    """Check an `evaluation:` mapping against the declared columns."""
    if raw is None:
        return EvaluationRoles()
    where = f"Schema {source}, evaluation"
    if not isinstance(raw, dict) or set(raw) - _ROLE_KEYS:
        raise SchemaError(f"{where}: must be a mapping with keys among {sorted(_ROLE_KEYS)}.")
    by_name = {c.name: c for c in columns if not c.is_identifier}
    target = raw.get("target")
    if target is not None and str(target) not in by_name:
        raise SchemaError(f"{where}: target {target!r} is not a modelled column of the schema.")
    survival = raw.get("survival")
    if survival is None:
        return EvaluationRoles(target=None if target is None else str(target))
    if not isinstance(survival, dict) or set(survival) != {"time", "event"}:
        raise SchemaError(f"{where}: survival must be a mapping with exactly 'time' and 'event'.")
    time, event = str(survival["time"]), str(survival["event"])
    if time not in by_name or by_name[time].type not in ("numeric", "integer"):
        raise SchemaError(f"{where}: survival time {time!r} must be a numeric or integer column.")
    if event not in by_name or not is_event_column(by_name[event]):
        raise SchemaError(f"{where}: survival event {event!r} must be a boolean column or an "
                          "integer column bounded to [0, 1].")
    return EvaluationRoles(target=None if target is None else str(target),
                           survival_time=time, survival_event=event)


def is_event_column(col: Column) -> bool:
    return col.type == "boolean" or (col.type == "integer" and col.low >= 0 and col.high <= 1)
