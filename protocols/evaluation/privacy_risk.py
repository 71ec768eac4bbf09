"""Privacy risk: does the cohort sit closer to the records it was trained on?

All distances are Euclidean in the schema's data-independent encoding
(numbers scaled to [0, 1] by their declared bounds, one-hot categories,
missingness flags), so they mean the same at every site.

- exact copies: synthetic rows equal, in every modelled column, to a real row;
- DCR share: for each synthetic row, is its closest training record nearer
  than its closest holdout record? With training and holdout sets of equal
  size, a generator that does not memorise gives 0.5; ties count half;
- membership inference: an attacker who scores a record by its distance to the
  closest synthetic row tries to tell training records from holdout records;
  the ROC AUC of that attack is 0.5 when the cohort gives nothing away.
DCR share and the attack need real records that were *not* used in training
(a holdout); without one they are not computed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from protocols.encoding import build_encoding
from protocols.schema import Schema


def exact_copies(schema: Schema, real: pd.DataFrame, synthetic: pd.DataFrame) -> int:
    """How many synthetic rows are identical to some real row."""
    names = [c.name for c in schema.features]
    seen = set(_row_keys(real[names]))
    return sum(key in seen for key in _row_keys(synthetic[names]))


def _row_keys(frame: pd.DataFrame) -> list[tuple]:
    return list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))


def distance_risks(schema: Schema, training: pd.DataFrame, holdout: pd.DataFrame,
                   synthetic: pd.DataFrame, seed: int) -> tuple[float, float]:
    """(DCR share, membership-inference AUC), with training subsampled to the holdout's size."""
    encoding = build_encoding(schema)
    rng = np.random.default_rng(seed)
    size = min(len(training), len(holdout))
    train = encoding.encode(training)[rng.choice(len(training), size, replace=False)]
    hold = encoding.encode(holdout)[rng.choice(len(holdout), size, replace=False)]
    syn = encoding.encode(synthetic)
    to_train = _nearest(train, syn)
    to_hold = _nearest(hold, syn)
    share = float(np.mean(to_train < to_hold) + 0.5 * np.mean(to_train == to_hold))
    members = np.concatenate([np.ones(size), np.zeros(size)])
    closeness = -np.concatenate([_nearest(syn, train), _nearest(syn, hold)])
    return share, float(roc_auc_score(members, closeness))


def _nearest(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = NearestNeighbors(n_neighbors=1).fit(reference)
    return index.kneighbors(queries, return_distance=True)[0][:, 0]
