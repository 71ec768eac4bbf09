"""The coordinator presents each site's last ledger head; a site whose ledger lost it
declines. Real ServerApp and ClientApp in Flower's simulation engine, real files: two
hospitals keep their ledgers across three studies, as deployed nodes do."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.simulation import run_simulation

from coordinator.server_app import build_server_app
from node.client_app import build_client_app
from protocols.plan import StudyPlan
from protocols.release.signing import public_key_pem
from simulation.engine import loopback_backend_config, ray_environment

pytestmark = pytest.mark.integration
SITES = ("hospital-01", "hospital-02")


@pytest.fixture
def consortium(tmp_path, demo_registry):
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    data = []
    for name in SITES:
        data.append(tmp_path / f"{name}.csv")
        demo_registry.sites[name].to_csv(data[-1], index=False)
    key = Ed25519PrivateKey.generate()
    key_path = tmp_path / "manifest-signing.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    public = tmp_path / "manifest-signing.pub"
    public.write_text(public_key_pem(key.public_key()))
    return {"schema-path": str(schema), "site-data": os.pathsep.join(map(str, data)),
            "engine": "simulation", "signing-key": str(key_path),
            "manifest-public-key": str(public), "node-state-dir": str(tmp_path / "nodes"),
            "ledger-heads": str(tmp_path / "studies" / "ledger-heads.json")}


def _study(consortium: dict, out: Path, seed: int) -> dict:
    plan = StudyPlan(epsilon=1.0, rounds=1, local_steps=2, hidden=8, latent=2, rows=20,
                     seed=seed, min_sites=1)
    overrides = {**consortium, **plan.to_config(), "out-dir": str(out)}
    with warnings.catch_warnings(), ray_environment():
        warnings.simplefilter("ignore")
        run_simulation(server_app=build_server_app(overrides),
                       client_app=build_client_app(overrides), num_supernodes=len(SITES),
                       backend_config=loopback_backend_config())
    return json.loads((out / "manifest.json").read_text())


def _ledger(consortium: dict, node: int) -> Path:
    return Path(consortium["node-state-dir"]) / f"node-{node}" / "privacy-ledger.jsonl"


def test_a_site_whose_ledger_was_cut_short_declines_the_next_study(consortium, tmp_path):
    first = _study(consortium, tmp_path / "studies" / "study-1", seed=1)
    known = json.loads(Path(consortium["ledger-heads"]).read_text())
    assert known == first["ledger_heads"] and set(known) == set(SITES)
    for node, site in enumerate(SITES):
        lines = _ledger(consortium, node).read_text().splitlines()
        assert json.loads(lines[-1])["hash"] == known[site]

    second = _study(consortium, tmp_path / "studies" / "study-2", seed=2)
    assert second["contributors"] == list(SITES)  # both ledgers still hold their heads
    # hospital-02 drops its second study and recomputes nothing: a valid, shorter chain.
    ledger = _ledger(consortium, 1)
    kept = ledger.read_text().splitlines()[:2]
    ledger.write_text("\n".join(kept) + "\n")

    third = _study(consortium, tmp_path / "studies" / "study-3", seed=3)
    assert third["contributors"] == ["hospital-01"]
    assert ledger.read_text().splitlines() == kept  # nothing reserved, nothing trained
    assert json.loads(Path(consortium["ledger-heads"]).read_text())["hospital-02"] == \
        second["ledger_heads"]["hospital-02"]  # still the head it must show
