"""Sampling the pooled generator and releasing the cohort.

The cohort is post-processing of the pooled DP releases only (sampled by the plan's
generator family). Files are
written to a staging folder and moved into place only once all of them and
the signed manifest are complete, so a failure (signing included) never
leaves a partial or unsigned release.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.release.manifest import (CSV_NAME, MANIFEST_NAME, PARQUET_NAME, Release,
                                        SitePrivacySpent, StudyRun, build_manifest,
                                        write_manifest)
from protocols.release.provenance import marked_table
from protocols.release.signing import sign_manifest
from protocols.schema import Schema

def release_cohort(cohort: pd.DataFrame, out_dir: Path, *, schema: Schema, plan: StudyPlan,
                   sites: Mapping[str, SitePrivacySpent],
                   contributions: Mapping[str, list[int]], engine: str,
                   signing_key: Ed25519PrivateKey, tls: bool = False,
                   run: StudyRun | None = None) -> Release:
    """Write synthetic.csv, synthetic.parquet and manifest.json (signed with
    `signing_key`; `run`: the Flower run releasing it) into `out_dir`, all or nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fedsynth-release-", dir=out_dir))
    try:
        files = {CSV_NAME: staging / CSV_NAME, PARQUET_NAME: staging / PARQUET_NAME}
        cohort.to_csv(files[CSV_NAME], index=False)
        _write_parquet(cohort, files[PARQUET_NAME], schema.sha256)
        manifest = sign_manifest(build_manifest(
            schema_sha256=schema.sha256, plan=plan, sites=sites, contributions=contributions,
            engine=engine, tls=tls, files=files, rows=len(cohort),
            exposed_epsilon=family_for(plan).exposed_epsilon(plan, schema), run=run),
            signing_key)
        write_manifest(manifest, staging / MANIFEST_NAME)
        for name in (CSV_NAME, PARQUET_NAME, MANIFEST_NAME):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Release(directory=out_dir, manifest=manifest)


def _write_parquet(cohort: pd.DataFrame, path: Path, schema_sha256: str) -> None:
    """Parquet with a provenance marker in its metadata, so it is never taken for real data."""
    table = pa.Table.from_pandas(cohort, preserve_index=False)
    pq.write_table(marked_table(table, schema_sha256), path)
