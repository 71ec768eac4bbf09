"""Reading a hospital's records file as text cells, or refusing it with a reason.

Everything that can go wrong before a cell is looked at is caught here, each
with the file, the line and what to do: a file too large to check in memory, a
spreadsheet or archive saved under a .csv name, text that is not UTF-8, NUL
bytes, broken quoting, a row with the wrong number of fields, a repeated
column. A UTF-8 byte order mark and CRLF line ends are valid and accepted.

Cells come back as text so that nothing is converted behind the user's back;
`protocols.records` checks them against the schema.
"""

from __future__ import annotations

import codecs
import csv
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from protocols.errors import RecordError
from protocols.identifier_columns import identifier_kind_of_value, mask

# The largest records file a node reads (on disk, and for Parquet also uncompressed). The
# whole file is held in memory while every cell is checked, at about 18 bytes of memory per
# byte of CSV. Measured with check_file: a 128 MiB, 1.8-million-row CSV of the demo
# registry's 12 columns peaks 2.3 GiB above the interpreter and takes 35 s; 32 MiB of it,
# 0.56 GiB; 32 MiB of 20 one-digit integer columns, 0.5 GiB. A file at the limit thus needs
# about 4.6 GiB, which a hospital server can hold, and a rare-disease registry extract
# never comes near it: 256 MiB is about 3.5 million rows of those 12 columns, more patients
# than any rare-disease registry has.
MAX_RECORDS_BYTES = 256 * 2**20

_PARQUET_SUFFIXES = (".parquet", ".pq")
_OTHER_FORMATS = (  # first bytes of files that are often saved or renamed as .csv
    (b"PK\x03\x04", "a ZIP archive, such as an Excel workbook (.xlsx)"),
    (b"\xd0\xcf\x11\xe0", "an Office 97-2003 document, such as an Excel workbook (.xls)"),
    (b"PAR1", "a Parquet file (give it the .parquet suffix)"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (codecs.BOM_UTF16_LE, "UTF-16 text"),
    (codecs.BOM_UTF16_BE, "UTF-16 text"),
)
_EXPORT_HINT = ("export the records as CSV (UTF-8, comma-separated; in Excel 'CSV UTF-8') "
                "or as Parquet")


def read_table(path: str | Path, max_bytes: int = MAX_RECORDS_BYTES) -> pd.DataFrame:
    """Read a CSV (UTF-8, BOM and CRLF accepted) or Parquet file as text cells.

    A file larger than `max_bytes` is refused before any of it is read.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"Records file {path} does not exist or is not a file.")
    _refuse_if_too_large(path, path.stat().st_size, max_bytes, "")
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        return _read_parquet(path, max_bytes)
    return _read_csv(path)


def _refuse_if_too_large(path: Path, size: int, max_bytes: int, kind: str) -> None:
    if size > max_bytes:
        raise RecordError(
            f"{path} is {_size(size)}{kind} but a node reads records files of at most "
            f"{_size(max_bytes)} (every cell is checked in memory); a rare-disease registry "
            "extract is a few megabytes: check that this is the right file and export only "
            "the columns the schema declares.")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def _read_csv(path: Path) -> pd.DataFrame:
    """Parse with the csv module so every row's field count can be checked:
    a short row is an error, never silently padded with empty cells."""
    _check_text(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header, rows = _parse_rows(path, csv.reader(handle, strict=True))
    except (OSError, UnicodeDecodeError) as exc:  # e.g. the file changed while it was read
        raise RecordError(f"Records file {path} cannot be read: {exc}.") from None
    if header is None or all(not h for h in header):
        raise RecordError(f"{path} is empty: expected a header line and at least one record.")
    _check_header(path, header)
    if not rows:
        raise RecordError(f"{path} has a header but no records.")
    return pd.DataFrame(rows, columns=header, dtype=object)


def _parse_rows(path: Path, reader: Any) -> tuple[list[str] | None, list[list[str]]]:
    """The header (stripped) and the non-blank rows, each with as many fields as the header."""
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = [h.strip() for h in row]
            elif len(row) != len(header):
                raise RecordError(
                    f"{path}: row {len(rows) + 1} (line {reader.line_num}) has {len(row)} "
                    f"field(s) but the header has {len(header)}; every row must have one "
                    "value per column (is a value with a comma missing its quotes?).")
            else:
                rows.append(row)
    except csv.Error as exc:
        raise RecordError(f"{path}, line {reader.line_num}: cannot be parsed as "
                          f"comma-separated values ({exc}); check the quoting there.") from None
    return header, rows


def _check_text(path: Path) -> None:
    """Refuse, naming the line, a file that is not UTF-8 text: another format saved as .csv,
    undecodable bytes, NUL bytes. Streams one line at a time, so it costs no memory."""
    try:
        with path.open("rb") as handle:
            start = handle.read(16)
            for signature, what in _OTHER_FORMATS:
                if start.startswith(signature):
                    raise RecordError(f"{path}, line 1: the file is {what}, not CSV text; "
                                      f"{_EXPORT_HINT}.")
            handle.seek(0)
            for number, line in enumerate(handle, start=1):
                _check_line(path, number, line)
    except OSError as exc:
        raise RecordError(f"Records file {path} cannot be read: {exc.strerror}.") from None


def _check_line(path: Path, number: int, line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"{path}, line {number}: byte 0x{line[exc.start]:02x} is not UTF-8 text (binary "
            f"data, or text saved in another encoding such as Windows-1252); "
            f"{_EXPORT_HINT}.") from None
    if b"\x00" in line:
        raise RecordError(f"{path}, line {number}: contains a NUL byte, which CSV text never "
                          f"does (binary data, or UTF-16 text); {_EXPORT_HINT}.")


def _check_header(path: Path, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecordError(f"{path}: header, column {quoted(dupes[0])} appears more than once; "
                          "each column must appear exactly once.")


def quoted(name: str) -> str:
    """A column name for a one-line message: 'age'; escaped if it holds a line break;
    masked if it, or a part of it between separators, looks like a direct identifier
    (a file exported without its header line has a patient's values as column names)."""
    if any(identifier_kind_of_value(part) for part in re.split(r"[,;\t|]", name)):
        return f"{mask(name)!r} (masked: it looks like a direct identifier)"
    return f"'{name}'" if name.isprintable() else repr(name)


def _read_parquet(path: Path, max_bytes: int) -> pd.DataFrame:
    try:
        metadata = pq.read_metadata(path)
        size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        _refuse_if_too_large(path, size, max_bytes, " uncompressed")
        frame = pd.read_parquet(path)
    except RecordError:
        raise
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise RecordError(f"{path} cannot be read as Parquet: {exc}.") from None
    if frame.empty:
        raise RecordError(f"{path} has no records.")
    _check_header(path, [str(c) for c in frame.columns])
    return frame.apply(_parquet_column_as_text)


def _parquet_column_as_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        text = series.dt.strftime("%Y-%m-%d")
    else:
        text = series.astype(object).map(str)
    return text.where(series.notna(), "")
