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
from flwr.supercore.constant import DEFAULT_SIMULATION_CONFIG

from coordinator.server_app import build_server_app
from protocols.generators import FAMILIES, family_for
from protocols.plan import StudyPlan
from protocols.plan_defaults import DEFAULT_FAMILY
from simulation.engine import loopback_backend_config, ray_environment

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _component(reference):
    module, attr = reference.split(":")
    return getattr(importlib.import_module(module), attr)


# `flwr run .` without a federation: Flower's local simulation federation, of this size.
LOCAL_SUPERNODES = DEFAULT_SIMULATION_CONFIG.num_supernodes


@pytest.fixture(scope="module")
def components():
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["components"]


@pytest.fixture(scope="module")
def run_config():
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_declares_the_server_and_client_apps(components):
    assert isinstance(_component(components["serverapp"]), ServerApp)
    assert isinstance(_component(components["clientapp"]), ClientApp)
    assert components["serverapp"].startswith("coordinator.")
    assert components["clientapp"].startswith("node.")


def test_flwr_run_offers_the_default_family_with_its_rounds(run_config):
    """TOML cannot ask the family, so the numbers are written out; this keeps them true
    (`tests/protocols/test_plan.py` holds every plan key, SecAgg+ included, to the default
    plan of Flower's local federation)."""
    assert run_config["generator"] == DEFAULT_FAMILY
    assert run_config["rounds"] == FAMILIES[DEFAULT_FAMILY].default_rounds
    family_for(StudyPlan.from_config(run_config))


@pytest.mark.integration
def test_pyprojects_run_config_runs_a_study_on_the_built_in_registry(components, run_config,
                                                                      tmp_path, monkeypatch):
    """With no site files configured, simulated nodes train on the built-in registry, as
    under `flwr run .` in its local federation: Flower hands the ServerApp pyproject's run
    config (which `run_simulation` leaves empty, so the test passes it)."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(), ray_environment():
        warnings.simplefilter("ignore")
        run_simulation(server_app=build_server_app(run_config),
                       client_app=_component(components["clientapp"]),
                       num_supernodes=LOCAL_SUPERNODES,
                       backend_config=loopback_backend_config())
    manifest = json.loads((tmp_path / "fedsynth-out" / "manifest.json").read_text())
    assert manifest["contributors"] == ["hospital-01", "hospital-02"]
    assert manifest["plan"]["generator"] == DEFAULT_FAMILY
    assert manifest["secure_aggregation"] is run_config["secure-aggregation"]
    assert all(0 < s["epsilon_spent"] <= 3.0 for s in manifest["privacy"]["sites"].values())
