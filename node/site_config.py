"""Where a node finds its schema and records.

Deployment: the SuperNode's node config names them (`schema-path`,
`data-path`, optionally `site-name`), the folder of its privacy ledger
(`state-dir`), its total ε and δ budgets over all studies (`epsilon-budget`,
`delta-budget`) and the consortium's manifest-signing key it trusts
(`manifest-public-key`, from its kit), where it keeps its ledger's head outside
the state folder (`ledger-head-file`, `node.ledger.anchor`) and its caps on any
one study (the `[limits]` keys of node.toml under the same names,
`node.study_caps`; defaults where absent): a deployed node without the first ones
refuses to start training, and without the key it declines every evaluation.
Nothing a deployed node trusts comes from the run config, which is the
coordinator's word. Simulation: the run config lists one file per simulated
site (`site-data`, joined with the OS path separator) and the node's
`partition-id` picks its own; its ledger goes under the run's `node-state-dir`
(or a temporary folder of the run), and the harness, which plays both sides,
names the key (`manifest-public-key`); a simulated node keeps no head file and
has no caps. A simulated node with no file falls
back to the built-in demo registry, so `flwr run .` works out of the box; a
deployed node never does, it must be told where its records are.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.site_data import SiteData, encode_site, load_site
from node.study_caps import NO_CAPS, StudyCaps, read_caps
from protocols.config import read_flag, read_positive, read_text, read_whole_number
from protocols.demo_registry import DemoRegistry, simulate_registry
from protocols.errors import FedsynthError
from protocols.privacy.ledger import SiteBudget
from protocols.records import validate_records
from protocols.release.provenance import refuse_synthetic_records
from protocols.schema import Schema, load_schema, parse_schema


# The SuperNode's `--node-config` keys: written by `node.supernode_launch` from the kit,
# read here and by the ClientApp. (A simulation's run config uses SCHEMA_PATH, the
# manifest key and TRAIN_ON_SYNTHETIC under the same names.)
SCHEMA_PATH = "schema-path"
DATA_PATH = "data-path"
SITE_NAME = "site-name"
STATE_DIR = "state-dir"
EPSILON_BUDGET = "epsilon-budget"
DELTA_BUDGET = "delta-budget"
MANIFEST_PUBLIC_KEY = "manifest-public-key"
FEDERATED_EVALUATION = "federated-evaluation"
TRAIN_ON_SYNTHETIC = "train-on-synthetic"
LEDGER_HEAD_FILE = "ledger-head-file"


@dataclass(frozen=True)
class SiteSource:
    """The files (or demo site) a node trains on."""

    schema_path: str | None
    data_path: str | None
    site_name: str
    demo_partition: int | None = None
    demo_sites: int = 0
    state_dir: str | None = None
    budget: SiteBudget = SiteBudget(math.inf, math.inf)
    train_on_synthetic: bool = False  # the operator's explicit choice (--train-on-synthetic)
    manifest_public_key: str | None = None
    ledger_head_file: str | None = None  # outside the state folder (None: simulation)
    caps: StudyCaps = NO_CAPS

    def load_schema(self) -> Schema:
        """The consortium's schema alone: public, read before any record is."""
        if self.demo_partition is not None:
            return _demo_schema(self.demo_sites)
        return _schema_cached(self.schema_path, _file_stamp(self.schema_path))

    def refuse_a_cohort(self) -> None:
        """Refuse a records file marked as a fedsynth cohort (unless the operator allowed
        it): the mark is the file's provenance, read before any record is."""
        if self.data_path:
            refuse_synthetic_records(Path(self.data_path), self.train_on_synthetic)

    def load(self) -> tuple[Schema, SiteData]:
        """The validated, encoded site. A node process answers every round of a
        study, so the result is kept until either file changes on disk."""
        return _load_cached(self, _file_stamp(self.schema_path), _file_stamp(self.data_path))


def _file_stamp(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None  # the loader reports the missing file properly
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _schema_cached(path: str | None, stamp: object) -> Schema:
    return load_schema(path)


@functools.lru_cache(maxsize=4)
def _load_cached(source: SiteSource, schema_stamp: object, data_stamp: object
                 ) -> tuple[Schema, SiteData]:
    if source.demo_partition is not None:
        return _demo_site(source.demo_partition, source.demo_sites)
    schema = load_schema(source.schema_path)
    return schema, load_site(source.data_path, schema, name=source.site_name,
                             allow_synthetic=source.train_on_synthetic)


def resolve_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> SiteSource:
    """Decide which records this node trains on, from its node and run config."""
    if node_config.get(DATA_PATH):
        data = str(node_config[DATA_PATH])
        for key, why in ((STATE_DIR, "a folder for its privacy ledger"),
                         (EPSILON_BUDGET, "the total epsilon the site allows over all studies"),
                         (DELTA_BUDGET, "the total delta the site allows over all studies")):
            if node_config.get(key) in (None, ""):
                raise FedsynthError(f"This node has no '{key}' in its node config: a deployed "
                                    f"node needs {why} (--node-config).")
        budget = SiteBudget(
            read_positive(node_config[EPSILON_BUDGET], f"The node config's {EPSILON_BUDGET}",
                          infinite=True),
            read_positive(node_config[DELTA_BUDGET], f"The node config's {DELTA_BUDGET}",
                          at_most=1.0))  # 1: no limit
        return SiteSource(str(node_config.get(SCHEMA_PATH, "")), data,
                          str(node_config.get(SITE_NAME) or Path(data).stem),
                          state_dir=str(node_config[STATE_DIR]), budget=budget,
                          train_on_synthetic=_flag(node_config, TRAIN_ON_SYNTHETIC, "node"),
                          manifest_public_key=read_text(node_config.get(MANIFEST_PUBLIC_KEY)),
                          ledger_head_file=read_text(node_config.get(LEDGER_HEAD_FILE)),
                          caps=read_caps(node_config, "The node config"))
    if "partition-id" not in node_config:
        raise FedsynthError("This node has no 'data-path' in its node config: tell the "
                            "SuperNode where the site's records are (--node-config).")
    partition = read_whole_number(node_config["partition-id"], "The node config's partition-id")
    files = [f for f in str(run_config.get("site-data", "")).split(os.pathsep) if f]
    state_root = str(run_config.get("node-state-dir", "") or "")
    state_dir = os.path.join(state_root, f"node-{partition}") if state_root else None
    key = read_text(run_config.get(MANIFEST_PUBLIC_KEY))
    if not files:
        sites = read_whole_number(node_config.get("num-partitions", 1),
                                  "The node config's num-partitions")
        return SiteSource(None, None, _demo_site_name(partition, sites), demo_partition=partition,
                          demo_sites=sites, state_dir=state_dir, manifest_public_key=key)
    if partition >= len(files):
        raise FedsynthError(f"Simulated node {partition} has no data file: the run lists "
                            f"{len(files)} site file(s).")
    return SiteSource(str(run_config[SCHEMA_PATH]), files[partition],
                      Path(files[partition]).stem, state_dir=state_dir,
                      train_on_synthetic=_flag(run_config, TRAIN_ON_SYNTHETIC, "run"),
                      manifest_public_key=key)


def _flag(config: Mapping[str, Any], key: str, which: str) -> bool:
    return read_flag(config.get(key, False), f"The {which} config's {key}")


@functools.lru_cache(maxsize=4)
def _demo_registry(n_partitions: int) -> DemoRegistry:
    return simulate_registry(n_sites=min(12, max(5, n_partitions)))


@functools.lru_cache(maxsize=4)
def _demo_schema(n_partitions: int) -> Schema:
    return parse_schema(_demo_registry(n_partitions).schema_yaml,
                        source="built-in demo registry")


def _demo_site_name(partition: int, n_partitions: int) -> str:
    names = list(_demo_registry(n_partitions).sites)
    if partition >= len(names):
        raise FedsynthError(f"The built-in registry has {len(names)} hospitals; simulated "
                            f"node {partition} has none. Use at most 12 nodes.")
    return names[partition]


def _demo_site(partition: int, n_partitions: int) -> tuple[Schema, SiteData]:
    """A resolved demo partition's site (`_demo_site_name` refused one out of range)."""
    schema = _demo_schema(n_partitions)
    name, frame = list(_demo_registry(n_partitions).sites.items())[partition]
    text = frame.drop(columns=[c.name for c in schema.identifiers]).astype(object)
    text = text.where(frame.notna(), "").astype(str)
    validation = validate_records(text, schema, source=name)
    validation.raise_if_invalid()
    return schema, encode_site(validation.parsed, schema, name)
