"""Marking a fedsynth cohort as synthetic, and recognising one, so that it is never
taken for real patient records.

A released cohort carries two marks: the `manifest.json` beside it lists its
files, and its Parquet file holds a `fedsynth` entry in its metadata (which
stays with the file when it is copied away from its manifest). Training a node
on a cohort would pass synthetic rows off as patients and feed the generator
its own output (model collapse); both sides check these marks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from protocols.errors import RecordError
from protocols.release.manifest import MANIFEST_NAME, PROVENANCE

PARQUET_MARKER_KEY = b"fedsynth"


def marked_table(table: pa.Table, schema_sha256: str) -> pa.Table:
    """`table` with the provenance marker added to its Parquet metadata."""
    marker = {"synthetic": True, "provenance": PROVENANCE, "schema_sha256": schema_sha256}
    metadata = {**(table.schema.metadata or {}), PARQUET_MARKER_KEY: json.dumps(marker).encode()}
    return table.replace_schema_metadata(metadata)


def synthetic_provenance(data_path: Path) -> str | None:
    """How `data_path` is marked as a fedsynth cohort ("listed in …/manifest.json",
    "marked in its Parquet metadata"), or None when it carries no mark."""
    data_path = Path(data_path)
    manifest = data_path.parent / MANIFEST_NAME
    if manifest.is_file() and data_path.name in _listed_files(manifest):
        return f"listed in {manifest}"
    if data_path.suffix.lower() in (".parquet", ".pq") and _parquet_marked(data_path):
        return "marked as one in its Parquet metadata"
    return None


def refuse_synthetic_records(path: Path, allowed: bool) -> bool:
    """Whether `path` is a fedsynth cohort; `RecordError` if it is and the operator did not
    allow training on one (--train-on-synthetic), saying why and the way round it."""
    provenance = synthetic_provenance(path)
    if provenance and not allowed:
        raise RecordError(
            f"{path} is a SYNTHETIC fedsynth cohort ({provenance}), not real patient records: "
            "training on it would pass synthetic rows off as patients and feed the generator "
            "its own output. Only if that is really intended, pass --train-on-synthetic; the "
            "released manifest then records which sites trained on a cohort.")
    return provenance is not None


def _listed_files(manifest: Path) -> dict:
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _parquet_marked(path: Path) -> bool:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return False  # not readable as Parquet: the records reader says why
    return PARQUET_MARKER_KEY in metadata
