"""`fedsynth-coordinator study` on a real federation: the study command a coordinator runs.

The federation the deployment tests share (tests/deploy/conftest.py: a TLS SuperLink
with node authentication and three `fedsynth-node start` nodes); the command runs
as the operator would, from the installed release (no `flwr run .` of a checkout), with
the coordinator kit filling the run config. It exits 0 only for a verified release of
its own run and bundle; a study that fails exits 1, also when the folder still holds an
earlier study's release. The same plan run twice makes two studies, each charged once.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from node.cli import main as node_main
from protocols.release.app_bundle import release_sha256

from federation import CONNECTION, SHARED_SITES, Federation, tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SITES = SHARED_SITES
SMALL = 'generator="vae" rounds=1 local-steps=2 rows=100 hidden=16'


@pytest.fixture
def federation(consortium: Federation) -> Federation:
    """The consortium the deployment tests share (tests/deploy/conftest.py)."""
    return consortium


def _study(fed: Federation, out: Path, run_config: str, timeout: float = 400,
           watch: set[str] | None = None) -> subprocess.CompletedProcess:
    """`fedsynth-coordinator study` to its end; `watch` collects which of the SuperLink and
    the ServerApp's SuperExec ran the ServerApp (`flwr-serverapp`) below it meanwhile."""
    argv = [tool("fedsynth-coordinator"), "study", CONNECTION, "--kit",
            str(fed.kits / "coordinator"), "--schema", str(fed.schema), "--out", str(out),
            "--run-config", run_config]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=fed._env(fed.root / "flwr-home")) as study:
        deadline = time.monotonic() + timeout
        while study.poll() is None and time.monotonic() < deadline:
            if watch is not None:
                watch |= {name for name in ("superlink", "serverapp")
                          if fed.runs_below(name, "flwr-serverapp")}
            time.sleep(0.5)
        if study.poll() is None:
            study.kill()
        stdout, stderr = study.communicate()
    return subprocess.CompletedProcess(argv, study.returncode, stdout, stderr)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _reserved_studies(fed: Federation, site: str) -> list[str]:
    return [e["study"] for e in fed.ledger(site) if e["kind"] == "reserve"]


def test_the_same_plan_run_twice_is_two_studies_each_released_and_verified(federation):
    out = federation.root / "study-command"
    ran_below: set[str] = set()
    first = _study(federation, out, SMALL, watch=ran_below)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    # The coordinator's production layout: the ServerApp, which signs the manifest, ran
    # below its own SuperExec, never below the SuperLink (never given the signing key).
    assert ran_below == {"serverapp"}
    shipped = release_sha256()
    assert f"app bundle sha256 {shipped}" in first.stdout
    run_id = re.search(r"Successfully started run (\d+)", first.stdout).group(1)
    manifest = _manifest(out)
    assert (manifest["app_sha256"], manifest["flower_run_id"]) == (shipped, run_id)
    assert manifest["engine"] == "deployment" and manifest["tls"] is True
    assert manifest["contributors"] == SITES
    # A site whose kit pins this release (every provisioned kit does) finds the cohort
    # made by it.
    assert node_main(["verify", str(out), "--kit", str(federation.kits / SITES[0])]) == 0

    # The identical plan again, into the same folder: a new study with an id of its own,
    # charged as such at every site (not refused as a round charged twice).
    second = _study(federation, out, SMALL)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    again = _manifest(out)
    assert again["study"] != manifest["study"]
    assert again["plan"] == {**manifest["plan"], "study-nonce": again["plan"]["study-nonce"]}
    for site in SITES:
        assert _reserved_studies(federation, site)[-2:] == [manifest["study"], again["study"]]


def test_a_failed_study_exits_1_even_beside_an_earlier_release(federation):
    """Four sites asked for, three online: the ServerApp stops after round-timeout. The
    folder still holds the last test's release, which is not this run's."""
    out = federation.root / "study-command"
    if not (out / "manifest.json").exists():
        pytest.skip("needs the release of the test before")
    result = _study(federation, out, f'{SMALL} min-sites=4 round-timeout=5.0')
    assert result.returncode == 1, result.stdout[-4000:]
    assert result.stderr.startswith("fedsynth-coordinator: the study failed: ")
    assert "left from an earlier study" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

