"""The data-independent encoder/decoder.

`TableEncoding` is built from the schema alone — never from records — so two
hospitals with the same schema encode identically and the encoding itself
reveals nothing about anybody's data (under DP, a min/max or category list
read from private records would be an unaccounted leak).

Layout, column by column in schema order (identifiers are not modelled):
- numeric, integer and date columns: one value scaled from the declared
  bounds to [0, 1] (dates as days since 1970-01-01);
- categorical and boolean columns: a one-hot block in declared order;
- nullable columns: a missingness indicator, a separate 0/1 slot after a
  numeric value, or one extra trailing slot of a one-hot block.

Decoding maps an encoded sample back to exactly the schema's columns and types:
integers are integers, categories are declared labels, dates are dates, and
missing values appear only in nullable columns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from protocols.schema import Column, Schema

BlockKind = Literal["continuous", "onehot", "missing"]
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Block:
    """A slice of the encoded vector that belongs to one column."""

    column: str
    kind: BlockKind
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width


@dataclass(frozen=True)
class TableEncoding:
    """The encoded layout of a schema's modelled columns."""

    schema: Schema
    blocks: tuple[Block, ...]

    @property
    def width(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    def encode(self, parsed: pd.DataFrame) -> np.ndarray:
        """Encode typed values (as returned by `validate_records`) to float32."""
        out = np.zeros((len(parsed), self.width), dtype=np.float32)
        for col in self.schema.features:
            self._encode_column(col, parsed[col.name], out)
        return out

    def decode(self, encoded: np.ndarray, id_prefix: str = "synthetic") -> pd.DataFrame:
        """Decode hard samples to a frame with exactly the schema's columns and types.

        Identifier columns are filled with fresh labels (`synthetic-000001`, …)
        that say what the rows are and cannot collide with a real identifier.
        """
        n = encoded.shape[0]
        columns: dict[str, pd.Series] = {}
        for col in self.schema.columns:
            if col.is_identifier:
                columns[col.name] = pd.Series([f"{id_prefix}-{i + 1:06d}" for i in range(n)],
                                              dtype=object)
            else:
                columns[col.name] = self._decode_column(col, encoded)
        return pd.DataFrame(columns)

    def blocks_of(self, column: str) -> list[Block]:
        return [b for b in self.blocks if b.column == column]

    def _encode_column(self, col: Column, values: pd.Series, out: np.ndarray) -> None:
        blocks = {b.kind: b for b in self.blocks_of(col.name)}
        if col.is_discrete:
            block = blocks["onehot"]
            labels = list(col.categories)
            index = values.map({label: i for i, label in enumerate(labels)})
            missing = index.isna().to_numpy()
            codes = np.where(missing, len(labels), index.fillna(0).to_numpy()).astype(int)
            out[np.arange(len(values)), block.start + codes] = 1.0
            return
        numbers = values.to_numpy(dtype=float)
        missing = np.isnan(numbers)
        out[:, blocks["continuous"].start] = np.where(missing, 0.5, scale(col, numbers))
        if "missing" in blocks:
            out[:, blocks["missing"].start] = missing.astype(np.float32)

    def _decode_column(self, col: Column, encoded: np.ndarray) -> pd.Series:
        blocks = {b.kind: b for b in self.blocks_of(col.name)}
        if col.is_discrete:
            block = blocks["onehot"]
            codes = encoded[:, block.start:block.stop].argmax(axis=1)
            missing = codes >= len(col.categories)
            return _discrete_series(col, codes, missing)
        values = unscale(col, encoded[:, blocks["continuous"].start])
        missing = (encoded[:, blocks["missing"].start] > 0.5 if "missing" in blocks
                   else np.zeros(len(values), dtype=bool))
        return _bounded_series(col, values, missing)


def build_encoding(schema: Schema) -> TableEncoding:
    """The encoding of `schema`: a pure function of the schema, nothing else."""
    blocks: list[Block] = []
    start = 0
    for col in schema.features:
        if col.is_discrete:
            width = len(col.categories) + (1 if col.nullable else 0)
            blocks.append(Block(col.name, "onehot", start, width))
            start += width
            continue
        blocks.append(Block(col.name, "continuous", start, 1))
        start += 1
        if col.nullable:
            blocks.append(Block(col.name, "missing", start, 1))
            start += 1
    return TableEncoding(schema=schema, blocks=tuple(blocks))


def scale(col: Column, values: np.ndarray) -> np.ndarray:
    """Map values in the declared [min, max] to [0, 1]; a point domain maps to 0.5."""
    span = col.high - col.low
    if span == 0:
        return np.full_like(values, 0.5, dtype=float)
    return (values - col.low) / span


def unscale(col: Column, unit: np.ndarray) -> np.ndarray:
    """Inverse of `scale`, clipped into the declared domain (post-processing only)."""
    unit = np.clip(np.nan_to_num(unit.astype(float), nan=0.5), 0.0, 1.0)
    # Clip again: low + 1.0 * (high - low) can round a few ulps past high.
    return np.clip(col.low + unit * (col.high - col.low), col.low, col.high)


def _discrete_series(col: Column, codes: np.ndarray, missing: np.ndarray) -> pd.Series:
    if col.type == "boolean":
        flags = codes == 1
        if col.nullable:
            return pd.Series(pd.array(np.where(missing, None, flags), dtype="boolean"))
        return pd.Series(flags, dtype=bool)
    labels = np.array(col.categories + ("",), dtype=object)[np.minimum(codes, len(col.categories))]
    return pd.Series(np.where(missing, None, labels), dtype=object)


def _bounded_series(col: Column, values: np.ndarray, missing: np.ndarray) -> pd.Series:
    if col.type == "numeric":
        return pd.Series(np.where(missing, np.nan, values), dtype=float)
    whole = np.clip(np.round(values), col.low, col.high).astype(np.int64)
    if col.type == "integer":
        if col.nullable:
            return pd.Series(pd.array(np.where(missing, None, whole), dtype="Int64"))
        return pd.Series(whole, dtype=np.int64)
    dates = whole.astype("datetime64[D]").astype(object)  # datetime.date, in C
    dates[missing] = None
    return pd.Series(dates, dtype=object)
