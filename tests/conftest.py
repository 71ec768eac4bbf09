"""Shared fixtures: the demo data dictionary, a CSV writer into tmp_path, hypothesis settings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from protocols.demo_registry import DemoRegistry, simulate_registry
from protocols.schema import Schema, parse_schema

# Property tests that replay: by default ("ci", what `.ci/run` and the README's command
# run) every draw is derived from the test's name (derandomize) with no example database,
# so a failure is the same failure on every machine and every run. `HYPOTHESIS_PROFILE=
# explore` draws afresh each run, to hunt for new counterexamples; each one it finds is
# printed with its @reproduce_failure blob. Hypothesis' other caches (charmap, constants)
# go to the system temp directory rather than `.hypothesis/` in the repo.
settings.register_profile("ci", deadline=None, max_examples=60, database=None,
                          derandomize=True, print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=300, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "fedsynth-hypothesis")


@pytest.fixture(scope="session", autouse=True)
def _config_home(tmp_path_factory: pytest.TempPathFactory):
    """XDG_CONFIG_HOME in a temporary folder, so that no test (nor any subprocess it
    starts, which inherits the environment) writes a signing key into the real home.
    Session-wide, so that module-scoped fixtures that start processes see it too."""
    previous = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = previous


@pytest.fixture(scope="session")
def demo_registry() -> DemoRegistry:
    """The built-in simulated registry (schema YAML plus one frame per hospital)."""
    return simulate_registry()


@pytest.fixture(scope="session")
def demo_schema(demo_registry: DemoRegistry) -> Schema:
    """The demo registry's data dictionary, parsed by the real schema parser."""
    return parse_schema(demo_registry.schema_yaml, source="demo-schema.yaml")


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """`write_csv(frame, name="records.csv", **to_csv_kwargs)` writes `frame` under tmp_path.

    The index is never written; the path of the new file is returned.
    """

    def write(frame: pd.DataFrame, name: str = "records.csv", **to_csv_kwargs) -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False, **to_csv_kwargs)
        return path

    return write


@pytest.fixture(scope="session")
def demo_parsed(demo_registry: DemoRegistry, demo_schema: Schema) -> dict[str, pd.DataFrame]:
    """Each demo hospital's records as `validate_records` parses them (identifiers dropped)."""
    return {name: parse_frame(frame, demo_schema, name)
            for name, frame in demo_registry.sites.items()}


@pytest.fixture(scope="session")
def frame_parser() -> Callable[[pd.DataFrame, Schema, str], pd.DataFrame]:
    """`frame_parser(frame, schema, source)`: see `parse_frame`."""
    return parse_frame


def parse_frame(frame: pd.DataFrame, schema: Schema, source: str) -> pd.DataFrame:
    """Validate an in-memory frame the way a node validates a file (empty cell = missing)."""
    from protocols.records import drop_identifiers, validate_records

    text = drop_identifiers(frame, schema).astype(object)
    text = text.where(frame[text.columns].notna(), "").astype(str)
    validation = validate_records(text, schema, source)
    validation.raise_if_invalid()
    return validation.parsed
