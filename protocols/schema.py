"""The consortium's data dictionary (schema).

A schema lists every column of a study's records with its type and its
*public* domain: numeric bounds, category lists, date ranges, nullability, and
which columns are direct identifiers. The domain is published by the
consortium, never read from records, which is what lets every node encode its
data without leaking anything about it (see `protocols.encoding`).

The canonical SHA-256 of the schema identifies the study's data contract: it
travels with every message, and a node refuses a plan whose hash differs from
that of its own schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from protocols.errors import SchemaError
from protocols.schema_roles import EvaluationRoles, parse_roles

COLUMN_TYPES = ("numeric", "integer", "categorical", "boolean", "date", "identifier")
BOUNDED_TYPES = ("numeric", "integer", "date")
MAX_BOUND = 1e15  # float32 encoding and float64 spans stay meaningful below this
_CONTROL_CHARACTERS = {chr(c) for c in range(32)} | {chr(127)}
_COLUMN_KEYS = {"name", "type", "min", "max", "categories", "nullable", "description"}
_SCHEMA_KEYS = {"name", "description", "columns", "evaluation"}


@dataclass(frozen=True)
class Column:
    """One column of the data dictionary.

    `low`/`high` are the declared bounds as numbers: floats for numeric, ints
    for integer, and days since 1970-01-01 for dates. `categories` holds the
    declared labels in declared order (booleans use "false", "true").
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    nullable: bool = False
    description: str = ""

    @property
    def is_identifier(self) -> bool:
        return self.type == "identifier"

    @property
    def is_discrete(self) -> bool:
        return self.type in ("categorical", "boolean")

    def to_canonical(self) -> dict[str, Any]:
        """The column's contract as plain JSON values (descriptions excluded)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type in BOUNDED_TYPES:
            out["min"] = _bound_to_canonical(self.type, self.low)
            out["max"] = _bound_to_canonical(self.type, self.high)
        if self.type == "categorical":
            out["categories"] = list(self.categories)
        if not self.is_identifier:
            out["nullable"] = self.nullable
        return out


@dataclass(frozen=True)
class Schema:
    """A parsed, self-consistent data dictionary."""

    name: str
    columns: tuple[Column, ...]
    description: str = ""
    roles: EvaluationRoles = EvaluationRoles()  # not part of the contract, nor of the hash

    @property
    def features(self) -> tuple[Column, ...]:
        """The columns that are modelled: every column except identifiers."""
        return tuple(c for c in self.columns if not c.is_identifier)

    @property
    def identifiers(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.is_identifier)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_canonical(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [c.to_canonical() for c in self.columns]}

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON form: same contract, same hash."""
        text = json.dumps(self.to_canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_canonical(), sort_keys=False, allow_unicode=True)


def load_schema(path: str | Path) -> Schema:
    """Read and check a schema file; raise `SchemaError` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SchemaError(f"Schema file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"Schema file {path} cannot be read as UTF-8 text: {exc}.") from None
    return parse_schema(text, source=str(path))


class _SchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that an impossible unquoted date (2021-02-30)
    is a YAML error with its position instead of a bare ValueError."""


def _construct_timestamp(loader: _SchemaLoader, node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a real date ({exc})", node.start_mark) from None


_SchemaLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def parse_schema(text: str, source: str = "<schema>") -> Schema:
    """Parse schema YAML text into a `Schema`, refusing any contradiction."""
    try:
        doc = yaml.load(text, Loader=_SchemaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SchemaError(f"Schema {source} is not valid YAML: {exc}".rstrip(".") + ".") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list):
        raise SchemaError(
            f"Schema {source} must be a mapping with a 'columns' list "
            "(one entry per column with 'name' and 'type')."
        )
    unknown = sorted(set(doc) - _SCHEMA_KEYS)
    if unknown:
        raise SchemaError(f"Schema {source} has unknown top-level keys {unknown}; "
                          f"allowed: {sorted(_SCHEMA_KEYS)}.")
    columns = tuple(_parse_column(entry, i, source) for i, entry in enumerate(doc["columns"]))
    _check_columns(columns, source)
    return Schema(
        # No fallback to the file name: the name is part of the hash, and the same
        # contract saved under two file names must keep one hash.
        name=str(doc.get("name") or ""),
        columns=columns,
        description=str(doc.get("description") or ""),
        roles=parse_roles(doc.get("evaluation"), columns, source),
    )


def _check_columns(columns: tuple[Column, ...], source: str) -> None:
    seen: set[str] = set()
    for col in columns:
        if col.name in seen:
            raise SchemaError(f"Schema {source}, column '{col.name}': the name is declared twice; "
                              "column names must be unique.")
        seen.add(col.name)
    if not any(not c.is_identifier for c in columns):
        raise SchemaError(f"Schema {source} declares no column to model "
                          "(every column is an identifier or the list is empty).")


def _parse_column(entry: Any, index: int, source: str) -> Column:
    if not isinstance(entry, dict) or "name" not in entry:
        raise SchemaError(f"Schema {source}, column entry #{index + 1}: each column must be a "
                          "mapping with at least 'name' and 'type'.")
    name = str(entry["name"]).strip()
    where = f"Schema {source}, column '{name}'"
    if not name:
        raise SchemaError(f"Schema {source}, column entry #{index + 1}: the name is empty.")
    unknown = sorted(set(entry) - _COLUMN_KEYS)
    if unknown:
        raise SchemaError(f"{where}: unknown keys {unknown}; allowed: {sorted(_COLUMN_KEYS)}.")
    ctype = entry.get("type")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"{where}: type {ctype!r} is not one of {', '.join(COLUMN_TYPES)}.")
    nullable = entry.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{where}: 'nullable' must be true or false, not {nullable!r}.")
    _check_keys_fit_type(entry, ctype, where)
    low = high = None
    if ctype in BOUNDED_TYPES:
        low, high = _parse_bounds(entry, ctype, where)
    categories: tuple[str, ...] = ()
    if ctype == "categorical":
        categories = _parse_categories(entry.get("categories"), where)
    elif ctype == "boolean":
        categories = ("false", "true")
    return Column(name=name, type=ctype, low=low, high=high, categories=categories,
                  nullable=nullable and ctype != "identifier",
                  description=str(entry.get("description") or ""))


def _check_keys_fit_type(entry: dict[str, Any], ctype: str, where: str) -> None:
    if ctype not in BOUNDED_TYPES and ({"min", "max"} & set(entry)):
        raise SchemaError(f"{where}: 'min'/'max' only apply to numeric, integer and date "
                          f"columns, not to a {ctype} column.")
    if ctype != "categorical" and "categories" in entry:
        raise SchemaError(f"{where}: 'categories' only applies to categorical columns, "
                          f"not to a {ctype} column.")


def _parse_bounds(entry: dict[str, Any], ctype: str, where: str) -> tuple[float, float]:
    if "min" not in entry or "max" not in entry:
        raise SchemaError(f"{where}: a {ctype} column needs both 'min' and 'max' (its public "
                          "domain); bounds are never read from the records.")
    low = _parse_bound(entry["min"], ctype, f"{where}, min")
    high = _parse_bound(entry["max"], ctype, f"{where}, max")
    if low > high:
        raise SchemaError(f"{where}: min {entry['min']} is greater than max {entry['max']}.")
    if max(abs(low), abs(high)) > MAX_BOUND:
        raise SchemaError(f"{where}: bounds [{entry['min']}, {entry['max']}] are too large; "
                          f"use bounds within ±{MAX_BOUND:g} (rescale the unit if needed).")
    return low, high


def _number_from_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _parse_bound(value: Any, ctype: str, where: str) -> float:
    if ctype == "date":
        return float(parse_date_days(value, where))
    if isinstance(value, str):
        value = _number_from_text(value)  # YAML 1.1 reads 1e5 (no dot) as text
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where}: {value!r} is not a number.")
    if not math.isfinite(value):
        raise SchemaError(f"{where}: {value!r} is not a finite number.")
    if ctype == "integer":
        if float(value) != int(value):
            raise SchemaError(f"{where}: {value!r} is not a whole number (integer column).")
        return int(value)
    return float(value)


def _parse_categories(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{where}: a categorical column needs a non-empty 'categories' list.")
    labels: list[str] = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise SchemaError(f"{where}: category {item!r} must be written as text; quote it "
                              "(YAML reads yes/no/true/false and decimals as other types).")
        label = str(item)
        if label.strip() != label or not label:
            raise SchemaError(f"{where}: category {label!r} is empty or has surrounding spaces.")
        if any(ch in label for ch in _CONTROL_CHARACTERS):
            raise SchemaError(f"{where}: category {label!r} contains a line break or control "
                              "character, which cannot be written safely to CSV.")
        if label in labels:
            raise SchemaError(f"{where}: category {label!r} is listed twice.")
        labels.append(label)
    return tuple(labels)


_EPOCH = dt.date(1970, 1, 1)


def parse_date_days(value: Any, where: str) -> int:
    """Days since 1970-01-01 for an ISO date (a YAML date or 'YYYY-MM-DD' text)."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if not isinstance(value, dt.date):
        try:
            value = dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise SchemaError(f"{where}: {value!r} is not a date in YYYY-MM-DD form.") from None
    return (value - _EPOCH).days


def days_to_iso(days: int) -> str:
    return (_EPOCH + dt.timedelta(days=int(days))).isoformat()


def _bound_to_canonical(ctype: str, value: float | None) -> Any:
    if ctype == "date":
        return days_to_iso(int(value))
    if ctype == "integer":
        return int(value)
    return float(value)
