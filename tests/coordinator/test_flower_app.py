"""The Flower app declared in pyproject.toml: what `flwr run .` loads and runs."""

import importlib
import json
import tomllib
import warnings
from pathlib import Path

import pytest
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from simulation.engine import loopback_backend_config, ray_environment

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _component(reference):
    module, attr = reference.split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.fixture(scope="module")
def components():
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["components"]


def test_pyproject_declares_the_server_and_client_apps(components):
    assert isinstance(_component(components["serverapp"]), ServerApp)
    assert isinstance(_component(components["clientapp"]), ClientApp)
    assert components["serverapp"].startswith("coordinator.")
    assert components["clientapp"].startswith("node.")


@pytest.mark.integration
def test_declared_apps_run_a_study_on_the_built_in_registry(components, tmp_path, monkeypatch):
    """With no site files configured, simulated nodes train on the built-in
    registry (as under `flwr run .` with its default local federation of 2)."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(), ray_environment():
        warnings.simplefilter("ignore")
        run_simulation(server_app=_component(components["serverapp"]),
                       client_app=_component(components["clientapp"]), num_supernodes=2,
                       backend_config=loopback_backend_config())
    manifest = json.loads((tmp_path / "fedsynth-out" / "manifest.json").read_text())
    assert manifest["contributors"] == ["hospital-01", "hospital-02"]
    assert all(0 < s["epsilon_spent"] <= 3.0 for s in manifest["privacy"]["sites"].values())
