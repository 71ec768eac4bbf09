"""`fedsynth-coordinator demo`: the embedded default, run as a user runs it, offline.

It runs the ServerApp and ClientApp in this process with Flower's `run_simulation`, whose
code path never reaches Flower's dependency installer (only the SuperLink's and
SuperNode's app processes call it) and whose Ray cluster is shut down at the end; `demo`
runs through the same code as `simulate`. Pinned as an operator would see it: in a
network namespace with only loopback, with `python -m uv` / `python -m pip` trapped
(`offline`), nothing downloaded and nothing left running.
"""

import json
from collections.abc import Iterator

import pytest

from offline import Scratch, offline_prefix
from protocols.plan_defaults import DEFAULT_FAMILY
from simulation.demo import DEMO_SITES

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    folder = Scratch()
    yield folder
    folder.remove()


@pytest.mark.timeout(600)
def test_demo_releases_a_cohort_with_its_manifest_and_a_full_report_offline(scratch):
    """The demo exactly as a user first runs it: the default family under SecAgg+ over
    all six simulated hospitals, with the network cut off."""
    out = scratch.path / "demo"
    result = scratch.run(*scratch.command("fedsynth-coordinator", "demo", "--out", str(out),
                                          prefix=offline_prefix()), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not scratch.installers_started()
    assert not scratch.processes(), "a process it started is still running"
    for name in ("synthetic.csv", "synthetic.parquet", "manifest.json", "report.html",
                 "report.json", "schema.yaml"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["secure_aggregation"] is True
    assert {k: manifest["plan"][k] for k in ("generator", "min-sites", "colluders")} == {
        "generator": DEFAULT_FAMILY, "min-sites": DEMO_SITES, "colluders": 1}
    assert manifest["contributors"] == [f"hospital-{i:02d}" for i in range(1, DEMO_SITES + 1)]
    assert f"secure aggregation: on by default with {DEMO_SITES} sites" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["title"].startswith("Demo cohort")
    assert report["scores"]["dcr_share"] is not None  # the demo holds a fifth of each site out
    assert report["privacy_statement"]["epsilon_target_per_site"] == 3.0
    assert len(report["federated"]["sites"]) == DEMO_SITES
    assert report["figures"]["km"] is not None
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page
    # the blending advice for the smallest hospital: its curve, one recommendation per outcome
    blend = report["blend"]
    assert blend["site"] == "hospital-01" and blend["ratios"][0] == 0.0
    assert [rec["outcome"] for rec in blend["recommendations"]] == [
        "treated", "survival_months / death"]
    assert "How much of the cohort hospital-01 should mix" in page
    assert blend["sentence"].split(" (")[0] in page
    assert len(list((out / "holdout").glob("*.csv"))) == DEMO_SITES
