"""`deploy/demo-deployment.sh`: a whole TLS deployment on one machine, and its cleanup.

The script is run as an operator runs it: real `fedsynth-coordinator provision`,
a real `flower-superlink` with node authentication, three real SuperNodes and
`flwr run`. Every process it starts carries a marker in its environment (children
inherit it), so the tests can check that none outlives the script — after a
released cohort and after a study the ServerApp refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "demo-deployment.sh"
SITES = ["siteA", "siteB", "siteC"]
SCRIPT_TIMEOUT_S = 500  # about 2 minutes alone; much longer on a busy 2-core machine


def run_demo(out: Path, *options: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run the script on `out`; return its result and the marker its processes carry."""
    marker = f"fedsynth-demo-test-{uuid.uuid4().hex}"
    env = {**os.environ, "FEDSYNTH_DEMO_TEST_MARKER": marker}
    argv = ["bash", str(SCRIPT), *options, str(out)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as script:
        try:
            stdout, stderr = script.communicate(timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            script.terminate()  # its trap still ends what it started
            stdout, stderr = script.communicate(timeout=60)
            pytest.fail(f"the demo ran past {SCRIPT_TIMEOUT_S} s: {stdout[-2000:]}{stderr[-2000:]}")
    return subprocess.CompletedProcess(argv, script.returncode, stdout, stderr), marker


def processes_carrying(*needles: str) -> list[str]:
    """Command lines of live processes whose command line or environment holds a needle."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(n.encode() in cmdline or n.encode() in environ for n in needles):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {command}")
    return found


def leftovers(*needles: str, grace: float = 10.0) -> list[str]:
    """Processes still carrying a needle after `grace` seconds (killed ones take a moment)."""
    deadline = time.monotonic() + grace
    while (found := processes_carrying(*needles)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_demo_releases_a_tls_deployment_cohort_and_stops_every_process(tmp_path: Path) -> None:
    """The default family, without SecAgg+ (the script's --no-secure-aggregation): the
    script's own work is what this pins (processes, kits, the study command, cleanup); a
    3-site SecAgg+ deployment study runs in tests/deploy/test_operator_guide.py and
    test_federation.py, and its four extra message stages a round would only add time."""
    out = tmp_path / "out"
    result, marker = run_demo(out, "--no-secure-aggregation")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    cohort = pd.read_csv(out / "synthetic.csv")
    assert len(cohort) == 500
    assert len((out / "synthetic.csv").read_text().splitlines()) == 501
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "deployment"
    assert manifest["tls"] is True
    assert manifest["secure_aggregation"] is False
    assert {k: manifest["plan"][k] for k in ("generator", "rounds")} \
        == {"generator": "marginals", "rounds": 2}
    assert manifest["contributors"] == sorted(SITES)
    spent = {name: site["epsilon_spent"] for name, site in manifest["privacy"]["sites"].items()}
    assert set(spent) == set(SITES)
    assert all(0 < epsilon <= 3.0 for epsilon in spent.values()), spent
    assert "sites that contributed: siteA, siteB, siteC" in result.stdout
    assert "verified: 2 files, signed by key" in result.stdout and "(trusted)" in result.stdout
    assert (out / "work" / "logs" / "superlink.log").is_file()
    assert leftovers(marker, str(tmp_path)) == []


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_study_the_serverapp_refuses_fails_clearly_and_stops_every_process(
        tmp_path: Path) -> None:
    # Zero rounds passes the script's own check (a whole number) and reaches the running
    # federation, whose ServerApp refuses the plan: the failure comes after every
    # process was started.
    out = tmp_path / "out"
    result, marker = run_demo(out, "--rounds", "0")
    assert result.returncode != 0
    assert "the study ended without releasing a cohort" in result.stderr
    assert "rounds must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[0]
    assert not (out / "manifest.json").exists()
    assert leftovers(marker, str(tmp_path)) == []


def test_a_nonempty_folder_that_is_no_earlier_demo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "records.csv").write_text("patient_id\n1\n")
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "is not empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.csv"]


def test_a_missing_outdir_prints_the_usage() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: deploy/demo-deployment.sh")
