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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from protocols.errors import SchemaError
from protocols.schema_columns import (BOUNDED_TYPES, COLUMN_TYPES, MAX_BOUND, Column, EntryLines,
                                      days_to_iso, did_you_mean, parse_column, parse_date_days)
from protocols.schema_roles import EvaluationRoles, parse_roles

__all__ = ["BOUNDED_TYPES", "COLUMN_TYPES", "MAX_BOUND", "Column", "Schema", "days_to_iso",
           "load_schema", "parse_date_days", "parse_schema"]

_SCHEMA_KEYS = {"name", "description", "columns", "evaluation"}


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
    """Parse schema YAML text into a `Schema`, refusing any contradiction.

    Every refusal names the file, the line, the column, the value and the rule:
    the YAML is composed first so each column entry keeps its line numbers.
    """
    doc, root = _load_yaml(text, source)
    if isinstance(doc, dict):
        _refuse_unknown_top_level_keys(doc, root, source)
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list):
        raise SchemaError(
            f"Schema {source} must be a mapping with a 'columns' list (one entry per column "
            f"with 'name' and 'type'), but {_what_it_is(doc)}.")
    lines = _column_lines(root, len(doc["columns"]))
    columns = tuple(parse_column(entry, i, source, lines[i])
                    for i, entry in enumerate(doc["columns"]))
    _check_columns(columns, source, lines)
    return Schema(
        # No fallback to the file name: the name is part of the hash, and the same
        # contract saved under two file names must keep one hash.
        name=str(doc.get("name") or ""),
        columns=columns,
        description=str(doc.get("description") or ""),
        roles=parse_roles(doc.get("evaluation"), columns, source),
    )


def _refuse_unknown_top_level_keys(doc: dict, root: yaml.Node | None, source: str) -> None:
    unknown = sorted(map(str, set(doc) - _SCHEMA_KEYS))
    if unknown:
        line = _entry_lines(root).keys.get(unknown[0]) if root is not None else None
        raise SchemaError(
            f"Schema {source}{f', line {line}' if line else ''}: unknown top-level key "
            f"{unknown[0]!r}{did_you_mean(unknown[0], tuple(sorted(_SCHEMA_KEYS)))}; allowed: "
            f"{', '.join(sorted(_SCHEMA_KEYS))}.")


def _load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (which knows the lines), as `yaml.load` builds them."""
    loader = _SchemaLoader(text)
    try:
        root = loader.get_single_node()
        _refuse_duplicate_keys(root, source)
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.YAMLError as exc:
        raise SchemaError(_yaml_error(exc, text, source)) from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> str:
    """One line: where the YAML breaks, why, and what the line says."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"Schema {source} is not valid YAML: {problem}."
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    during = f" ({context} at line {context_mark.line + 1})" if context and context_mark else ""
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    tabs = "; YAML indents with spaces, never tabs" if "\t" in line else ""
    return (f"Schema {source}, line {mark.line + 1}, character {mark.column + 1}: not valid "
            f"YAML: {problem}{during}; the line reads {line.strip()!r}{tabs}.")


def _refuse_duplicate_keys(node: yaml.Node | None, source: str) -> None:
    """PyYAML keeps the last of two equal keys silently; a contract must not."""
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                raise SchemaError(
                    f"Schema {source}, line {key.start_mark.line + 1}: key {key.value!r} "
                    f"appears twice in one mapping (first at line {seen[key.value]}); "
                    "YAML would silently keep only the last value.")
            seen[str(key.value)] = key.start_mark.line + 1
            children.append(value)
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    for child in children:
        _refuse_duplicate_keys(child, source)


def _column_lines(root: yaml.Node | None, n_columns: int) -> list[EntryLines]:
    """The lines of each `columns:` entry and of its keys and list items."""
    entries: list[yaml.Node] = []
    if isinstance(root, yaml.MappingNode):
        entries = next((v.value for k, v in root.value if k.value == "columns"
                        and isinstance(v, yaml.SequenceNode)), [])
    lines = [_entry_lines(entry) for entry in entries]
    return lines + [EntryLines()] * (n_columns - len(lines))


def _entry_lines(entry: yaml.Node) -> EntryLines:
    keys: dict[str, int] = {}
    items: dict[str, tuple[int, ...]] = {}
    if isinstance(entry, yaml.MappingNode):
        for key, value in entry.value:
            keys[str(key.value)] = key.start_mark.line + 1
            if isinstance(value, yaml.SequenceNode):
                items[str(key.value)] = tuple(v.start_mark.line + 1 for v in value.value)
    return EntryLines(entry.start_mark.line + 1, keys, items)


def _what_it_is(doc: Any) -> str:
    if doc is None:
        return "it is empty"
    if isinstance(doc, dict):
        return ("it has no 'columns' key" if "columns" not in doc
                else f"'columns' is {type(doc['columns']).__name__} {doc['columns']!r}"[:120])
    return f"it is a {'list' if isinstance(doc, list) else type(doc).__name__}"


def _check_columns(columns: tuple[Column, ...], source: str, lines: list[EntryLines]) -> None:
    first: dict[str, int | None] = {}
    for col, where in zip(columns, lines):
        if col.name in first:
            at = f", line {where.line}" if where.line else ""
            earlier = f" (first at line {first[col.name]})" if first[col.name] else ""
            raise SchemaError(f"Schema {source}{at}, column '{col.name}': the name is declared "
                              f"twice{earlier}; column names must be unique.")
        first[col.name] = where.line
    if not any(not c.is_identifier for c in columns):
        raise SchemaError(f"Schema {source} declares no column to model "
                          "(every column is an identifier or the list is empty).")
