"""Fixtures shared by the node's tests."""

import pytest


@pytest.fixture
def site_files(tmp_path, demo_registry):
    """One hospital's schema and records files, as its kit names them (hospital-03)."""
    schema_path = tmp_path / "schema.yaml"
    schema_path.write_text(demo_registry.schema_yaml)
    data_path = tmp_path / "hospital-03.csv"
    demo_registry.sites["hospital-03"].to_csv(data_path, index=False)
    return schema_path, data_path
