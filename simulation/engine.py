"""Running a study in Flower's simulation engine, one simulated node per site file.

Everything a user gave is checked here, once, before the engine starts (the
plan's generator family, the schema, every row of every file, each site's size
against the plan, distinct site names), so bad input fails fast with one clear
message and leaves no output behind; the parsed schema is handed to the
coordinator's ServerApp. The simulated nodes then read their own files inside
the engine exactly as deployed nodes do: a node never takes its records from
the coordinator's side of the harness (and Flower's Ray backend ships the
ClientApp's closure with every message, so records held in it would travel to
every node every round). This harness is the one place that imports both `node`
and `coordinator`.

The engine's Ray cluster holds every site's records in its workers, so it
must be reachable from this machine only: `ray_environment` makes Ray bind
every server (GCS, raylet, object manager, workers, agents) to loopback, which
it does only when told it is a single-machine cluster
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`: `_node_ip_address="127.0.0.1"` alone
is rewritten to the host's routable address), and turns on Ray's token
authentication with a fresh random token held only in the environment of the
processes Ray starts (never written to disk), so another local user cannot
submit work to it either.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from coordinator.checkpoints import resumable
from coordinator.provisioning.signing_key import signing_key
from coordinator.server_app import ProgressFn, build_server_app
from node.client_app import build_client_app
from node.site_data import load_site
from protocols.errors import FedsynthError, PlanError
from protocols.generators import check_site_size, family_for
from protocols.plan import StudyPlan
from protocols.release.manifest import CSV_NAME, MANIFEST_NAME, PARQUET_NAME, Release
from protocols.release.signing import public_key_pem
from protocols.schema import Schema, load_schema

NODE_STATE = ".simulated-nodes"


# Builds the hospitals' ClientApp from the run config's overrides
# (`node.client_app.build_client_app`; a test may wrap it).
ClientAppFactory = Callable[[dict[str, Any]], ClientApp]


def simulate_study(schema_path: Path, data_paths: Sequence[Path], plan: StudyPlan,
                   out_dir: Path, progress: ProgressFn, signing_key_path: Path | None = None,
                   train_on_synthetic: bool = False,
                   client_app: ClientAppFactory = build_client_app) -> Release:
    """Check every input (the manifest-signing key too: `signing_key_path`, or this
    user's own key, made on first use), then run the whole study in the engine."""
    schema = check_inputs(schema_path, data_paths, plan, train_on_synthetic)
    _refuse_overwriting_inputs(data_paths, out_dir)
    signer = signing_key(signing_key_path)
    if signer.created:
        progress(f"generated this coordinator's manifest-signing key {signer.path}")
    state = _simulated_node_state(schema, plan, out_dir)
    overrides: dict[str, Any] = {
        **plan.to_config(),
        "schema-path": str(schema_path.resolve()),
        "site-data": os.pathsep.join(str(p.resolve()) for p in data_paths),
        "out-dir": str(out_dir.resolve()),
        "engine": "simulation",
        "train-on-synthetic": train_on_synthetic,
        "signing-key": str(signer.path.resolve()),
        "node-state-dir": str(state),
        # The simulated hospitals trust the key this harness signs with, as a deployed
        # node trusts the consortium key in its kit.
        "manifest-public-key": str(_trusted_key_file(signer.key, state)),
    }
    outcome: dict[str, Any] = {}
    server = build_server_app(overrides, progress, outcome, schema=schema)
    client = client_app(overrides)
    with warnings.catch_warnings(), ray_environment():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server, client_app=client, num_supernodes=len(data_paths),
                       backend_config=loopback_backend_config())
    if "error" in outcome:
        error = outcome["error"]
        raise error if isinstance(error, FedsynthError) else FedsynthError(
            f"The study failed: {error}") from error
    if "release" not in outcome:
        raise FedsynthError("The simulation engine stopped before the study finished; "
                            "run again with --verbose to see Flower's log.")
    shutil.rmtree(overrides["node-state-dir"], ignore_errors=True)
    return outcome["release"]


def _trusted_key_file(key, state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "manifest-signing.pub"
    path.write_text(public_key_pem(key.public_key()), encoding="ascii")
    return path


def _simulated_node_state(schema: Schema, plan: StudyPlan, out_dir: Path) -> Path:
    """The simulated hospitals' ledgers, kept beside the checkpoints while the study
    runs: a study resumed from its checkpoint finds them, so no round is charged
    twice; a fresh study starts with fresh ones; a released study removes them."""
    folder = out_dir / NODE_STATE
    if resumable(out_dir, plan, schema.sha256) is None:
        shutil.rmtree(folder, ignore_errors=True)
    return folder.resolve()


def check_inputs(schema_path: Path, data_paths: Sequence[Path], plan: StudyPlan,
                 train_on_synthetic: bool = False) -> Schema:
    """Refuse bad input before anything runs (one message naming file, row, column,
    rule); return the parsed schema."""
    family_for(plan)  # the family's own rules on the plan, before any file is read
    schema = load_schema(schema_path)
    names = [p.stem for p in data_paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FedsynthError(f"Two site files are named '{dupes[0]}': site names come from the "
                            "file names and must be distinct.")
    if len(data_paths) < plan.min_sites:
        raise PlanError(f"The plan needs at least {plan.min_sites} sites (min-sites) but "
                        f"{len(data_paths)} data file(s) were given.")
    for path in data_paths:
        site = load_site(path, schema, allow_synthetic=train_on_synthetic)
        check_site_size(plan, site.n_records, str(path))
    return schema


def _refuse_overwriting_inputs(data_paths: Sequence[Path], out_dir: Path) -> None:
    """Nothing a user gave us is lost: a cohort never replaces an input file."""
    outputs = {(out_dir / name).resolve() for name in (CSV_NAME, PARQUET_NAME, MANIFEST_NAME)}
    for path in data_paths:
        if path.resolve() in outputs:
            raise FedsynthError(f"{path} would be overwritten by the cohort written to "
                                f"{out_dir}; choose another --out folder.")


@contextlib.contextmanager
def ray_environment() -> Iterator[None]:
    """Ray on loopback only, with token authentication, for the duration of a study
    (the variables are restored afterwards; Ray's processes inherit them)."""
    settings = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": _ray_token(), "RAY_USAGE_STATS_ENABLED": "0"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.lru_cache(maxsize=1)
def _ray_token() -> str:
    """One random token per process: Ray's driver keeps the first token it reads, so a
    second study in the same process must present the same one."""
    return secrets.token_hex(32)


def loopback_backend_config() -> dict[str, Any]:
    """Ray on loopback only, quiet, one CPU per simulated node."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "_node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
            "num_cpus": max(1, min(os.cpu_count() or 1, 4)),
        },
    }
