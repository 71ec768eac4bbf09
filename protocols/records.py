"""Reading a records file and checking every row against the schema.

Validation and parsing are one pass: `validate_records` returns the typed
values of every modelled column (floats, day numbers, declared labels) together
with every problem found, so nothing downstream re-parses text. Identifier
columns are dropped before any value is looked at. Values outside the declared
domain are problems, never clipped: a silent clip would hide a data error and a
bound read from the data would leak it.

Cells are read as text so that nothing is converted behind the user's back;
surrounding spaces are ignored and an empty cell means "missing".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from protocols.errors import RecordError
from protocols.schema import Column, Schema, days_to_iso

MAX_LISTED_PROBLEMS = 10
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


@dataclass(frozen=True)
class Problem:
    """One cell (or header) that breaks a rule of the schema."""

    row: int | None  # 1-based data row; None for a header problem
    column: str
    value: str
    rule: str

    def describe(self, source: str) -> str:
        where = f"row {self.row}, " if self.row is not None else "header, "
        return f"{source}: {where}column '{self.column}', value {self.value!r}: {self.rule}"


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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (UTF-8, BOM and CRLF accepted) or Parquet file as text cells."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"Records file {path} does not exist or is not a file.")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> pd.DataFrame:
    """Parse with the csv module so every row's field count can be checked:
    a short row is an error, never silently padded with empty cells."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = [row for row in csv.reader(handle, strict=True) if row]
    except UnicodeDecodeError:
        raise RecordError(f"{path} is not UTF-8 text (is it a CSV file?).") from None
    except csv.Error as exc:
        raise RecordError(f"{path} cannot be parsed as comma-separated values: {exc}.") from None
    if not rows or all(not h.strip() for h in rows[0]):
        raise RecordError(f"{path} is empty: expected a header line and at least one record.")
    header = [h.strip() for h in rows[0]]
    _check_header(path, header)
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise RecordError(f"{path}: row {number} has {len(row)} field(s) but the header has "
                              f"{len(header)}; every row must have one value per column.")
    if len(rows) == 1:
        raise RecordError(f"{path} has a header but no records.")
    return pd.DataFrame(rows[1:], columns=header, dtype=object)


def _check_header(path: Path, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecordError(f"{path}: header, column '{dupes[0]}' appears more than once; "
                          "each column must appear exactly once.")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise RecordError(f"{path} cannot be read as Parquet: {exc}.") from None
    if frame.empty:
        raise RecordError(f"{path} has no records.")
    return frame.apply(_parquet_column_as_text)


def _parquet_column_as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        text = series.dt.strftime("%Y-%m-%d")
    else:
        text = series.astype(object).map(str)
    return text.where(series.notna(), "")


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
    data nobody agreed to share).
    """
    declared = {c.name for c in schema.columns}
    problems = [Problem(None, c.name, "", "declared in the schema but missing from the file")
                for c in schema.features if c.name not in frame.columns]
    problems += [Problem(None, name, "", "not declared in the schema; remove it or declare it")
                 for name in frame.columns if name not in declared]
    if problems:
        problems[0:0] = _delimiter_hint(frame)
        return Validation(source, len(frame), pd.DataFrame(), problems)
    parsed: dict[str, pd.Series] = {}
    for col in schema.features:
        values, col_problems = _parse_column(frame[col.name], col)
        parsed[col.name] = values
        problems.extend(col_problems)
    problems.sort(key=lambda p: (p.row or 0))
    return Validation(source, len(frame), pd.DataFrame(parsed), problems)


def _delimiter_hint(frame: pd.DataFrame) -> list[Problem]:
    if len(frame.columns) == 1:
        only = str(frame.columns[0])
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in only:
                return [Problem(None, only, "", f"the header looks separated by {name}; "
                                "fedsynth expects comma-separated values")]
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
    problems = [Problem(int(i) + 1, col.name, str(raw.iloc[i]), str(rule))
                for i, rule in enumerate(bad.to_numpy()) if rule is not None]
    return values.reset_index(drop=True), problems


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
