"""`simulate` (and `demo`, which runs through it) downloads nothing and leaves nothing running.

They run the ServerApp and ClientApp in this process with Flower's `run_simulation`,
whose code path never reaches Flower's dependency installer (only the SuperLink's and
SuperNode's app processes call it) and whose Ray cluster is shut down at the end. Pinned
as an operator would see it: `fedsynth-coordinator simulate` in a network namespace with
only loopback, with `python -m uv` / `python -m pip` trapped (`offline`).
"""

from __future__ import annotations

import pytest

from offline import Scratch, offline_prefix

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_simulate_completes_offline_and_leaves_nothing_running(demo_registry):
    scratch = Scratch()
    try:
        schema = scratch.path / "schema.yaml"
        schema.write_text(demo_registry.schema_yaml)
        data = []
        for name in sorted(demo_registry.sites)[:2]:
            data += ["--data", str(scratch.path / f"{name}.csv")]
            demo_registry.sites[name].to_csv(data[-1], index=False)
        out = scratch.path / "out"
        result = scratch.run(*scratch.command(
            "fedsynth-coordinator", "simulate", "--schema", str(schema), *data,
            "--rows", "50", "--out", str(out), prefix=offline_prefix()))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert (out / "synthetic.csv").exists() and (out / "manifest.json").exists()
        assert not scratch.installers_started()
        assert not scratch.processes(), "a process it started is still running"
    finally:
        scratch.remove()
