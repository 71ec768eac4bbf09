"""What a site holds and must never send, for the message-whitelist test.

`SiteTruth` is read from a site's CSV by the node's own loader: its record
count, every cell as text, its identifiers and dates (which must not appear
even inside a longer text), and statistics of its columns that a leak would
show as a run of values in an array (`statistic_in`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from node.site_data import SiteData, load_site
from protocols.count_tables import build_layout
from protocols.schema import Schema


@dataclass(frozen=True)
class SiteTruth:
    """What the node holds and must never send: its size, its cells, its statistics."""

    site: SiteData
    cells: frozenset[str]  # every cell of the CSV, as text, in `normal_text` form
    distinctive: tuple[str, ...]  # identifiers and dates: not even inside a longer text
    statistics: dict[str, np.ndarray]  # column statistics: not in any array, not even a slice

    @property
    def n(self) -> int:
        return self.site.n_records


def site_truth(path: Path, schema: Schema) -> SiteTruth:
    site = load_site(path, schema)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    distinctive = [c.name for c in schema.columns if c.is_identifier or c.type == "date"]
    return SiteTruth(site=site,
                     cells=frozenset(normal_text(c) for c in text.to_numpy().ravel()) - {""},
                     distinctive=tuple(sorted(set(text[distinctive].to_numpy().ravel()) - {""})),
                     statistics=column_statistics(site, schema))


def normal_text(text: str) -> str:
    """A cell or a sent text in one form, so that "45", " 45.0" and "45.00" meet."""
    folded = text.strip().lower()
    try:
        return repr(float(folded))
    except ValueError:
        return folded


def column_statistics(site: SiteData, schema: Schema) -> dict[str, np.ndarray]:
    """Vectors a leak of a column statistic would show: the encoded columns' means and
    sums, each column's category counts, the numeric columns' means and medians,
    the exact marginal tables and shares. Constant vectors (e.g. an all-zero missing
    block) tell nothing and are left out, as are single numbers: one value among
    thousands of weights matches by chance (the record count is checked apart)."""
    encoded = site.encoded.astype(np.float64)
    stats = {"encoded means": encoded.mean(axis=0), "encoded sums": encoded.sum(axis=0)}
    for block in site.encoding.blocks:
        part = encoded[:, block.start:block.stop]
        stats[f"{block.column} {block.kind} sums"] = part.sum(axis=0)
        stats[f"{block.column} {block.kind} means"] = part.mean(axis=0)
    numeric = [c.name for c in schema.features if not c.is_discrete and c.type != "date"]
    values = site.parsed[numeric].astype(float)
    stats["numeric means"] = values.mean().to_numpy()
    stats["numeric medians"] = values.median().to_numpy()
    for name, table in build_layout(schema).counts(site.parsed).items():
        stats[f"exact table {name}"] = table.ravel()
        stats[f"exact shares {name}"] = table.ravel() / site.n_records
    return {k: v for k, v in stats.items() if v.size >= 2 and np.ptp(v) > 0}


# A noisy count table is whole numbers: a run of two or three counts of a site (the
# deaths and survivors of a small site, say) turns up in it by chance about once in a few
# hundred tables, with no leak. Whole-number statistics are looked for in whole-number
# arrays only from this length, where chance matches are below one in 10^6.
MIN_WHOLE_RUN = 4


def statistic_in(array: np.ndarray, statistics: dict[str, np.ndarray]) -> str | None:
    """The name of a statistic found as a run of values in `array` (flattened, or along
    any axis), or None."""
    whole = bool(np.array_equal(array, np.rint(array)))
    by_length: dict[int, list[str]] = {}
    for stat, vector in statistics.items():
        if whole and len(vector) < MIN_WHOLE_RUN and np.array_equal(vector, np.rint(vector)):
            continue
        by_length.setdefault(len(vector), []).append(stat)
    lines = [array.reshape(1, -1)] + [np.moveaxis(array, axis, -1).reshape(-1, size)
                                      for axis, size in enumerate(array.shape)]
    for line in lines:
        for length, names in by_length.items():
            if length > line.shape[1]:
                continue
            windows = np.lib.stride_tricks.sliding_window_view(
                line.astype(np.float64), length, axis=1)
            stack = np.stack([statistics[n] for n in names])
            hits = np.isclose(windows[:, :, None, :], stack, rtol=1e-6, atol=1e-6
                              ).all(axis=-1).any(axis=(0, 1))
            if hits.any():
                return names[int(hits.argmax())]
    return None
