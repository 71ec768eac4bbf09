"""Bias: did the cohort erase or shrink any declared category?

For every declared category of every categorical or boolean column, its share
of all rows in the real records and in the cohort. A category present in the
real records is flagged "erased" when the cohort has none of it, and "shrunk"
when its share fell below half of the real share: the under-represented groups
a consortium most needs to see are the ones a generator most easily drops.
"""

from __future__ import annotations

import pandas as pd

from protocols.schema import Schema

SHRUNK_BELOW = 0.5


def category_balance(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame) -> list[dict]:
    rows = []
    for col in schema.features:
        if not col.is_discrete:
            continue
        fr = real[col.name].value_counts(normalize=False) / max(1, len(real))
        fs = synthetic[col.name].value_counts(normalize=False) / max(1, len(synthetic))
        for label in col.categories:
            r, s = float(fr.get(label, 0.0)), float(fs.get(label, 0.0))
            flag = None
            if r > 0 and s == 0:
                flag = "erased"
            elif r > 0 and s < SHRUNK_BELOW * r:
                flag = "shrunk"
            rows.append({"column": col.name, "category": label, "real": r, "synthetic": s,
                         "ratio": s / r if r > 0 else None, "flag": flag})
    return rows
