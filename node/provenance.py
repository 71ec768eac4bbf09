"""Recognising a fedsynth synthetic cohort, so that it is never taken for real records.

Every released cohort sits beside a `manifest.json` that lists its files; a
records file named there is synthetic. Training a node on it would present
synthetic rows as patients (and spend privacy budget on nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

from protocols.manifest import MANIFEST_NAME


def synthetic_cohort_manifest(data_path: Path) -> Path | None:
    """The manifest that declares `data_path` a synthetic cohort, or None."""
    manifest = data_path.parent / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return None
    return manifest if data_path.name in files else None
