"""One column of the data dictionary: its type, its public domain, and how an entry is checked.

`parse_column` turns one `columns:` entry of the schema YAML into a `Column`,
refusing anything contradictory with a message that names the schema file,
the line, the column, the offending value and the rule (and, for a misspelt
type or key, the spelling that was probably meant). `protocols.schema` parses
the whole document and re-exports what is public here.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.errors import SchemaError

COLUMN_TYPES = ("numeric", "integer", "categorical", "boolean", "date", "identifier")
BOUNDED_TYPES = ("numeric", "integer", "date")
MAX_BOUND = 1e15  # float32 encoding and float64 spans stay meaningful below this
COLUMN_KEYS = ("name", "type", "min", "max", "categories", "nullable", "description")
_CONTROL_CHARACTERS = {chr(c) for c in range(32)} | {chr(127)}
# Type names other tools use, and the schema's word for them.
_TYPE_SYNONYMS = {
    "int": "integer", "float": "numeric", "double": "numeric", "number": "numeric",
    "real": "numeric", "decimal": "numeric", "continuous": "numeric", "bool": "boolean",
    "binary": "boolean", "category": "categorical", "enum": "categorical",
    "factor": "categorical", "string": "categorical", "str": "categorical",
    "text": "categorical", "datetime": "date", "timestamp": "date", "id": "identifier",
}


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
class EntryLines:
    """Where one column entry sits in the schema file (1-based lines), for messages."""

    line: int | None = None
    keys: Mapping[str, int] = field(default_factory=dict)  # key -> its line
    items: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # list key -> lines


@dataclass(frozen=True)
class _Place:
    source: str
    index: int
    name: str | None
    lines: EntryLines

    def at(self, key: str | None = None, item: int | None = None) -> str:
        """'Schema S, line 9, column 'age'': the line of `key` (or its `item`) if known."""
        line = self.lines.keys.get(key, self.lines.line) if key else self.lines.line
        items = self.lines.items.get(key, ()) if key else ()
        if item is not None and item < len(items):
            line = items[item]
        where = f"Schema {self.source}" + (f", line {line}" if line else "")
        return where + (f", column '{self.name}'" if self.name
                        else f", column entry #{self.index + 1}")


def parse_column(entry: Any, index: int, source: str, lines: EntryLines) -> Column:
    """Check one `columns:` entry and return its `Column`; raise `SchemaError` if it is wrong."""
    place = _Place(source, index, None, lines)
    if not isinstance(entry, dict) or "name" not in entry:
        raise SchemaError(f"{place.at()}: each column must be a mapping with at least 'name' "
                          f"and 'type', but {_shown(entry)}.")
    name = str(entry["name"]).strip()
    if not name:
        raise SchemaError(f"{place.at('name')}: the name is empty.")
    place = _Place(source, index, name, lines)
    unknown = sorted(map(str, set(entry) - set(COLUMN_KEYS)))
    if unknown:
        key = unknown[0]
        raise SchemaError(f"{place.at(key)}: unknown key {key!r}"
                          f"{did_you_mean(key, COLUMN_KEYS)}; allowed: {', '.join(COLUMN_KEYS)}.")
    ctype = entry.get("type")
    if ctype not in COLUMN_TYPES:
        raise SchemaError(f"{place.at('type')}: type {ctype!r} is not one of "
                          f"{', '.join(COLUMN_TYPES)}{_type_hint(ctype)}.")
    nullable = entry.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{place.at('nullable')}: 'nullable' must be true or false, "
                          f"not {nullable!r}.")
    _check_keys_fit_type(entry, ctype, place)
    low = high = None
    if ctype in BOUNDED_TYPES:
        low, high = _parse_bounds(entry, ctype, place)
    categories: tuple[str, ...] = ()
    if ctype == "categorical":
        categories = _parse_categories(entry.get("categories"), place)
    elif ctype == "boolean":
        categories = ("false", "true")
    return Column(name=name, type=ctype, low=low, high=high, categories=categories,
                  nullable=nullable and ctype != "identifier",
                  description=str(entry.get("description") or ""))


def _shown(entry: Any) -> str:
    if isinstance(entry, dict):
        return f"this entry has no 'name' (its keys: {', '.join(map(str, entry))})"
    return "this entry is empty" if entry is None else f"this entry is the text {entry!r}"


def did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(word).lower(), choices, n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_hint(ctype: Any) -> str:
    text = str(ctype).strip().lower()
    meant = text if text in COLUMN_TYPES else _TYPE_SYNONYMS.get(text)
    return f" (did you mean '{meant}'?)" if meant else ""


def _check_keys_fit_type(entry: dict[str, Any], ctype: str, place: _Place) -> None:
    if ctype not in BOUNDED_TYPES and ({"min", "max"} & set(entry)):
        raise SchemaError(f"{place.at('min' if 'min' in entry else 'max')}: 'min'/'max' only "
                          f"apply to numeric, integer and date columns, not to a {ctype} column.")
    if ctype != "categorical" and "categories" in entry:
        raise SchemaError(f"{place.at('categories')}: 'categories' only applies to categorical "
                          f"columns, not to a {ctype} column.")


def _parse_bounds(entry: dict[str, Any], ctype: str, place: _Place) -> tuple[float, float]:
    if "min" not in entry or "max" not in entry:
        raise SchemaError(f"{place.at()}: a {ctype} column needs both 'min' and 'max' (its "
                          "public domain); bounds are never read from the records.")
    low = _parse_bound(entry["min"], ctype, f"{place.at('min')}, min")
    high = _parse_bound(entry["max"], ctype, f"{place.at('max')}, max")
    if low > high:
        raise SchemaError(f"{place.at('min')}: min {entry['min']} is greater than max "
                          f"{entry['max']}; the declared domain is empty.")
    if max(abs(low), abs(high)) > MAX_BOUND:
        raise SchemaError(f"{place.at('min')}: bounds [{entry['min']}, {entry['max']}] are too "
                          f"large; use bounds within ±{MAX_BOUND:g} (rescale the unit if needed).")
    return low, high


def _number_from_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _parse_bound(value: Any, ctype: str, where: str) -> float:
    if ctype == "date":
        days = parse_date_days(value, where)
        if not (FIRST_DATE - _EPOCH).days <= days <= (LAST_DATE - _EPOCH).days:
            raise SchemaError(f"{where}: {days_to_iso(days)} lies outside the dates fedsynth "
                              f"can read ({FIRST_DATE} to {LAST_DATE}); declare bounds "
                              "between them.")
        return float(days)
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


def _parse_categories(raw: Any, place: _Place) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        shown = "missing" if raw is None else f"{raw!r}"
        raise SchemaError(f"{place.at('categories')}: 'categories' is {shown}, but a "
                          "categorical column needs a non-empty list of its labels.")
    labels: list[str] = []
    for i, item in enumerate(raw):
        where = place.at("categories", i)
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
# The dates pandas can hold (nanosecond timestamps): records outside cannot be read, so a
# schema may not declare them.
FIRST_DATE, LAST_DATE = dt.date(1677, 9, 22), dt.date(2262, 4, 11)


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
