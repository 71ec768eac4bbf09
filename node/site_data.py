"""Loading a site's records: read, drop identifiers, validate, encode.

This is the only way records enter training. A fedsynth synthetic cohort is
refused unless the site's operator explicitly allows training on one (the
reply then says so, and the cohort's manifest records it). Identifier columns
are removed first, every remaining cell is checked against the schema (a bad
file is refused whole, never partly used), and the encoding comes from the
schema alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocols.encoding import TableEncoding, build_encoding
from protocols.records import check_file
from protocols.release.provenance import refuse_synthetic_records
from protocols.schema import Schema


@dataclass(frozen=True)
class SiteData:
    """A site's encoded records, ready for DP training. Never leaves the node."""

    name: str
    encoding: TableEncoding
    encoded: np.ndarray
    parsed: pd.DataFrame  # the validated records, for evaluation at the node
    synthetic: bool = False  # a fedsynth cohort the operator chose to train on

    @property
    def n_records(self) -> int:
        return int(self.encoded.shape[0])


def load_site(path: str | Path, schema: Schema, name: str | None = None,
              allow_synthetic: bool = False) -> SiteData:
    """Read, validate and encode a site's file; raise `RecordError` if any row is bad,
    or if the file is a fedsynth cohort and `allow_synthetic` is not set."""
    synthetic = refuse_synthetic_records(Path(path), allow_synthetic)
    validation = check_file(path, schema)
    validation.raise_if_invalid()
    return encode_site(validation.parsed, schema, name or Path(path).stem, synthetic=synthetic)


def encode_site(parsed: pd.DataFrame, schema: Schema, name: str,
                synthetic: bool = False) -> SiteData:
    encoding = build_encoding(schema)
    return SiteData(name=name, encoding=encoding, encoded=encoding.encode(parsed), parsed=parsed,
                    synthetic=synthetic)
