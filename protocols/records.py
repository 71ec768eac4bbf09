"""Reading a records file and checking every row against the schema.

Validation and parsing are one pass: `validate_records` returns the typed
values of every modelled column (floats, day numbers, declared labels) together
with every problem found, so nothing downstream re-parses text. Identifier
columns are dropped before any value is looked at. Values outside the declared
domain are problems, never clipped: a silent clip would hide a data error and a
bound read from the data would leak it.

Cells are read as text (see `protocols.record_files`) so that nothing is
converted behind the user's back; surrounding spaces are ignored and an empty
cell means "missing". A value that looks like a direct identifier (an e-mail
address, a social security or phone number) is never repeated in a message,
only its masked shape.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from protocols.errors import RecordError
from protocols.identifier_columns import (first_identifier_value, identifier_kind_of_header,
                                          identifier_kind_of_value, identifier_rule, mask)
from protocols.privacy.site_limits import MAX_SITE_RECORDS
from protocols.record_files import MAX_RECORDS_BYTES, quoted, read_table
from protocols.schema import Column, Schema, days_to_iso

__all__ = ["MAX_LISTED_PROBLEMS", "MAX_RECORDS_BYTES", "Problem", "Validation", "check_file",
           "drop_identifiers", "read_table", "validate_records"]

MAX_LISTED_PROBLEMS = 10
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


@dataclass(frozen=True)
class Problem:
    """One cell (or header) that breaks a rule of the schema."""

    row: int | None  # 1-based data row; None for a header problem
    column: str
    value: str  # as written, or its masked shape when `masked`
    rule: str
    masked: bool = False  # the value looked like a direct identifier and is shown masked

    def describe(self, source: str) -> str:
        where = f"row {self.row}" if self.row is not None else "header"
        shown = "" if self.row is None and not self.value else f", value {self.value!r}"
        # A header problem with a masked value already says why in its rule.
        note = "" if not self.masked else " (masked)" if self.row is None else (
            " (masked: it looks like a direct identifier)")
        return f"{source}: {where}, column {quoted(self.column)}{shown}{note}: {self.rule}"


@dataclass
class Validation:
    """The outcome of checking one file: typed values and every problem."""

    source: str
    n_rows: int
    parsed: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One paragraph naming the first problems and how many there are."""
        if self.ok:
            return f"{self.source}: all {self.n_rows} rows are valid."
        shown = "; ".join(p.describe(self.source) for p in self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        tail = f"; and {more} more problem(s)" if more > 0 else ""
        return (f"{self.source} does not conform to the schema "
                f"({len(self.problems)} problem(s) in {self.n_rows} rows): {shown}{tail}.")

    def raise_if_invalid(self) -> None:
        if not self.ok:
            raise RecordError(self.summary())


def drop_identifiers(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Remove declared direct identifiers before any value is examined."""
    present = [c.name for c in schema.identifiers if c.name in frame.columns]
    return frame.drop(columns=present)


def check_file(path: str | Path, schema: Schema) -> Validation:
    """Read a records file, drop its identifiers and validate every row."""
    frame = drop_identifiers(read_table(path), schema)
    return validate_records(frame, schema, source=str(path))


def validate_records(frame: pd.DataFrame, schema: Schema, source: str) -> Validation:
    """Check every cell of `frame` against `schema` and parse the modelled columns.

    Identifier columns are dropped first. Missing columns and undeclared
    columns are header problems (an undeclared column might carry identifying
    data nobody agreed to share), and no cell is checked until the header is right.
    """
    if len(frame) > MAX_SITE_RECORDS:
        raise RecordError(f"{source} has {len(frame)} records, more than the "
                          f"{MAX_SITE_RECORDS} of the largest site fedsynth's guarantee is "
                          "stated for (every plan's delta is below 1/"
                          f"{MAX_SITE_RECORDS}); a rare-disease registry extract is far "
                          "smaller: check that this is the right file.")
    problems = _header_problems(frame, schema)
    if problems:
        return Validation(source, len(frame), pd.DataFrame(), problems)
    parsed: dict[str, pd.Series] = {}
    for col in schema.features:
        values, col_problems = _parse_column(frame[col.name], col)
        parsed[col.name] = values
        problems.extend(col_problems)
    problems.sort(key=lambda p: (p.row or 0))
    return Validation(source, len(frame), pd.DataFrame(parsed), problems)


def _header_problems(frame: pd.DataFrame, schema: Schema) -> list[Problem]:
    """Undeclared columns (those that look like identifiers first), then missing ones.

    An undeclared column that is a declared one misspelled gets one problem saying
    "did you mean", and the declared column it stands for is not reported again.
    """
    declared = [c.name for c in schema.columns]
    extra = [str(name) for name in frame.columns if name not in declared]
    hint = _delimiter_hint(extra, len(frame.columns)) or _headerless(extra, len(frame.columns))
    if hint:
        return hint
    missing = [c.name for c in schema.features if c.name not in frame.columns]
    problems: list[Problem] = []
    for name in extra:
        problem = _identifier_problem(name, frame[name])
        meant = None if problem else _meant(name, declared, missing)
        if meant is not None:
            problem = Problem(None, name, "", f"not declared in the schema; did you mean "
                              f"{quoted(meant)}? rename the column to match the schema (names are "
                              "case-sensitive)")
            missing = [m for m in missing if m != meant]
        problems.append(problem or Problem(None, name, "", "not declared in the schema; "
                                           "remove it from the extract or declare it"))
    problems.sort(key=lambda p: not p.masked)
    return problems + [Problem(None, name, "", "declared in the schema but missing from "
                               "the file") for name in missing]


def _identifier_problem(name: str, values: pd.Series) -> Problem | None:
    """An undeclared column whose name or values look like a direct identifier."""
    cells = values.astype(str)
    by_value = first_identifier_value(cells)
    kind = identifier_kind_of_header(name)
    if kind is not None:
        shown = by_value[1] if by_value else mask(next((c for c in cells if c.strip()), ""))
        return Problem(None, name, shown, identifier_rule(kind, "its name"), masked=bool(shown))
    if by_value is not None:
        return Problem(None, name, by_value[1], identifier_rule(by_value[0], "its values"),
                       masked=True)
    return None


def _meant(name: str, declared: list[str], missing: list[str]) -> str | None:
    """The declared column an undeclared one stands for: 'diagnosis_date' for
    'Diagnosis_Date', or a missing 'age' for 'agee'; None when nothing is close."""
    same_but_case = [d for d in declared if d.lower() == name.lower()]
    if same_but_case:
        return same_but_case[0]
    lowered = {m.lower(): m for m in missing}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


_VALUE = re.compile(r"[+-]?[0-9]+([.,][0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _headerless(extra: list[str], n_columns: int) -> list[Problem]:
    """A first line with no declared column name but numbers, dates or identifiers in it
    is a record, not a header: one problem, the line shown only masked."""
    if len(extra) < n_columns or not any(_VALUE.fullmatch(name.strip()) or
                                         identifier_kind_of_value(name) for name in extra):
        return []
    return [Problem(None, mask(",".join(extra)), "", "the first line looks like a record, "
                    "not a header (no column of the schema is named, and it holds numbers, "
                    "dates or identifiers; shown masked): export the file with its header line")]


def _delimiter_hint(extra: list[str], n_columns: int) -> list[Problem]:
    if n_columns == 1 and extra:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in extra[0]:
                return [Problem(None, extra[0], "", f"the header looks separated by {name}; "
                                "a node reads comma-separated values: export the file with "
                                "commas between the values")]
    return []


def _parse_column(raw: pd.Series, col: Column) -> tuple[pd.Series, list[Problem]]:
    text = raw.astype(str).str.strip()
    missing = text.eq("")
    if col.type in ("numeric", "integer"):
        values, bad = _parse_numbers(text, missing, col)
    elif col.type == "date":
        values, bad = _parse_dates(text, missing, col)
    elif col.type == "boolean":
        values, bad = _parse_booleans(text, missing)
    else:
        values = text.where(~missing, None).astype(object)
        bad = _rule_series(text, ~missing & ~text.isin(col.categories),
                           f"not one of the declared categories {list(col.categories)}")
    if not col.nullable:
        bad = bad.mask(missing, "empty, but the column is not nullable")
    problems = [_cell_problem(int(i) + 1, col.name, str(raw.iloc[i]), str(rule))
                for i, rule in enumerate(bad.to_numpy()) if rule is not None]
    return values.reset_index(drop=True), problems


def _cell_problem(row: int, column: str, value: str, rule: str) -> Problem:
    """A bad cell; a value shaped like an identifier is shown masked, never verbatim."""
    if identifier_kind_of_value(value) is not None:
        return Problem(row, column, mask(value), rule, masked=True)
    return Problem(row, column, value, rule)


def _rule_series(text: pd.Series, flag: pd.Series, rule: str) -> pd.Series:
    return pd.Series(np.where(flag.to_numpy(), rule, None), index=text.index, dtype=object)


def _parse_numbers(text: pd.Series, missing: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    numbers = _to_float(text.where(~missing, None))
    not_number = ~missing & numbers.isna()
    infinite = ~missing & np.isinf(numbers)
    bad = _rule_series(text, not_number, "not a number")
    bad = bad.mask(infinite, "not a finite number")
    if col.type == "integer":
        fractional = ~missing & ~not_number & ~infinite & (numbers != np.round(numbers))
        bad = bad.mask(fractional, "fractional value in an integer column")
    out_of_range = ~missing & ((numbers < col.low) | (numbers > col.high))
    bad = bad.mask(out_of_range & bad.isna(),
                   f"outside the declared bounds [{_fmt(col, col.low)}, {_fmt(col, col.high)}]")
    return numbers.where(bad.isna(), np.nan), bad


_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity)"


def _to_float(text: pd.Series) -> pd.Series:
    """Plain ASCII decimal numbers, parsed correctly rounded (pandas' fast parser can be off
    by an ulp at extreme exponents, which would move a value at a bound outside it); any
    other text (digit separators, other scripts' digits, 'nan') becomes NaN."""
    plain = text.str.fullmatch(_NUMBER, case=False, na=False)
    return text.where(plain, None).astype(object).map(
        lambda v: float("nan") if v is None else float(v)).astype(float)


def _parse_dates(text: pd.Series, missing: pd.Series, col: Column) -> tuple[pd.Series, pd.Series]:
    stamps = pd.to_datetime(text.where(~missing, None), format="%Y-%m-%d", errors="coerce")
    not_date = ~missing & stamps.isna()
    days = (stamps - pd.Timestamp("1970-01-01")).dt.days.astype(float)
    bad = _rule_series(text, not_date, "not a date in YYYY-MM-DD form")
    out_of_range = ~missing & ~not_date & ((days < col.low) | (days > col.high))
    bad = bad.mask(out_of_range,
                   f"outside the declared range [{_fmt(col, col.low)}, {_fmt(col, col.high)}]")
    return days.where(bad.isna(), np.nan), bad


def _parse_booleans(text: pd.Series, missing: pd.Series) -> tuple[pd.Series, pd.Series]:
    lowered = text.str.lower()
    values = pd.Series(np.where(lowered.isin(_TRUE), "true",
                                np.where(lowered.isin(_FALSE), "false", None)),
                       index=text.index, dtype=object)
    bad = _rule_series(text, ~missing & values.isna(), "not a boolean (true/false, 1/0, yes/no)")
    return values, bad


def _fmt(col: Column, bound: float | None) -> str:
    if col.type == "date":
        return days_to_iso(int(bound))
    if col.type == "integer":
        return str(int(bound))
    return f"{bound:g}"
