"""The two benchmark datasets, split into hospitals with a held-out quarter.

GBSG2 (German Breast Cancer Study Group 2; 686 patients, shipped inside the
`lifelines` package) is split into four non-IID sites by menopausal status ×
hormone therapy. The schema's bounds are clinical plausibility limits chosen
without looking at the records (what a consortium would publish), not the data's
min/max. The built-in registry simulator gives the second dataset. In both, 25%
of every site's patients are held out of training for the privacy and utility
tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocols.demo_registry import simulate_registry

HOLDOUT_SHARE = 0.25

GBSG2_SCHEMA = """\
name: gbsg2-benchmark
description: >
  German Breast Cancer Study Group 2 (Schumacher et al. 1994), node-positive breast
  cancer; recurrence-free survival. Bounds are clinical plausibility limits.
columns:
  - {name: horTh, type: categorical, categories: ["no", "yes"], description: hormone therapy}
  - {name: age, type: integer, min: 18, max: 100}
  - {name: menostat, type: categorical, categories: [Pre, Post]}
  - {name: tsize, type: integer, min: 0, max: 200, description: tumour size (mm)}
  - {name: tgrade, type: categorical, categories: [I, II, III]}
  - {name: pnodes, type: integer, min: 0, max: 60, description: positive lymph nodes}
  - {name: progrec, type: integer, min: 0, max: 3000, description: progesterone receptor (fmol/l)}
  - {name: estrec, type: integer, min: 0, max: 3000, description: estrogen receptor (fmol/l)}
  - {name: time, type: integer, min: 0, max: 3000, description: recurrence-free time (days)}
  - {name: cens, type: boolean, description: "recurrence or death observed (1) or censored (0)"}
evaluation:
  target: cens
  survival: {time: time, event: cens}
"""


@dataclass(frozen=True)
class BenchmarkData:
    """Raw site files (as a hospital would hold them) and the held-out records."""

    name: str
    schema_yaml: str
    sites: dict[str, pd.DataFrame]
    holdout: pd.DataFrame

    @property
    def pooled(self) -> pd.DataFrame:
        return pd.concat(self.sites.values(), ignore_index=True)

    def write_sites(self, folder: Path) -> tuple[Path, list[Path]]:
        """The schema and one CSV per site into `folder`, as `simulate` takes them."""
        folder.mkdir(parents=True, exist_ok=True)
        schema_path = folder / "schema.yaml"
        schema_path.write_text(self.schema_yaml, encoding="utf-8")
        paths = [folder / f"{name}.csv" for name in self.sites]
        for path, frame in zip(paths, self.sites.values()):
            frame.to_csv(path, index=False)
        return schema_path, paths


def gbsg2(seed: int = 0) -> BenchmarkData:
    from lifelines.datasets import load_gbsg2

    frame = load_gbsg2()
    groups = {f"{meno.lower()}-{'hormone' if hor == 'yes' else 'no-hormone'}": part
              for (meno, hor), part in frame.groupby(["menostat", "horTh"])}
    return _split("gbsg2", GBSG2_SCHEMA, groups, seed)


def registry(seed: int = 0) -> BenchmarkData:
    simulated = simulate_registry(seed=seed, n_sites=6)
    return _split("registry", simulated.schema_yaml, simulated.sites, seed)


def rare(seed: int = 0, hospitals: int = 8) -> BenchmarkData:
    """The regime fedsynth is for: `hospitals` hospitals of 20–60 training patients each
    (27–80 before a quarter is held out), drawn from the built-in registry's simulated
    hospitals, which keep their own case mix."""
    simulated = simulate_registry(seed=seed, n_sites=12)
    rng = np.random.default_rng([seed, hospitals])
    groups = {}
    for name, frame in list(simulated.sites.items())[-hospitals:]:  # the 12's largest
        size = int(rng.integers(27, 81))
        groups[name] = frame.iloc[rng.permutation(len(frame))[:size]]
    return _split("rare", simulated.schema_yaml, groups, seed)


def _split(name: str, schema_yaml: str, groups: dict[str, pd.DataFrame],
           seed: int) -> BenchmarkData:
    rng = np.random.default_rng(seed)
    sites, held = {}, []
    for site, part in sorted(groups.items()):
        order = rng.permutation(len(part))
        cut = int(round(HOLDOUT_SHARE * len(part)))
        held.append(part.iloc[order[:cut]])
        sites[site] = part.iloc[order[cut:]].reset_index(drop=True)
    return BenchmarkData(name, schema_yaml, sites, pd.concat(held, ignore_index=True))
