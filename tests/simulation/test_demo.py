"""`fedsynth-coordinator demo`: the embedded default, run as a user runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_releases_a_cohort_with_its_manifest_and_a_full_report(tmp_path):
    out = tmp_path / "demo"
    code = "import sys; from simulation.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "demo", "--out", str(out),
                             "--rounds", "3", "--local-steps", "5", "--rows", "400"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("synthetic.csv", "synthetic.parquet", "manifest.json", "report.html",
                 "report.json", "schema.yaml"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["title"].startswith("Demo cohort")
    assert report["scores"]["dcr_share"] is not None  # the demo holds a fifth of each site out
    assert report["privacy_statement"]["epsilon_target_per_site"] == 3.0
    assert len(report["federated"]["sites"]) == 6
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
    assert len(list((out / "holdout").glob("*.csv"))) == 6
