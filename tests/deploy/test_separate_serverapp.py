"""The coordinator's production layout, with real processes: the SuperLink runs no app
code (`--isolation process`) and a `flower-superexec` of its own runs the ServerApp.

This is how deploy/systemd and deploy/compose.yaml run the coordinator, so that the
manifest-signing key is given to the ServerApp's process only, never to the SuperLink
(the process that faces the hospitals' traffic). The SuperExec proves itself to the
SuperLink with a shared secret.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from node.cli import main as node_main

from federation import Federation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SITES = ["hospital-01", "hospital-02"]
STUDY_S = 500


def test_a_study_runs_and_is_signed_by_a_serverapp_outside_the_superlink(
        tmp_path: Path, demo_registry):
    fed = Federation(tmp_path, SITES, demo_registry.schema_yaml)
    for site in SITES:
        demo_registry.sites[site].to_csv(tmp_path / f"{site}.csv", index=False)
    fed.provision()
    out = tmp_path / "study"
    ran_below: set[str] = set()
    try:
        fed.start_superlink(separate_serverapp=True)
        for site in SITES:
            fed.enroll(site)
            fed.start_node(site, tmp_path / f"{site}.csv")
        study = fed.start_study(out, rows=100, **{"min-sites": 2})
        deadline = time.monotonic() + STUDY_S
        while study.poll() is None and time.monotonic() < deadline:
            ran_below |= {name for name in ("superlink", "serverapp")
                          if fed.runs_below(name, "flwr-serverapp")}
            time.sleep(0.5)
        if study.poll() is None:
            study.kill()
        log, _ = study.communicate()
    finally:
        fed.stop()
    assert study.returncode == 0, log[-4000:]
    # The ServerApp ran below the SuperExec only: the SuperLink started no app code.
    assert ran_below == {"serverapp"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contributors"] == SITES and manifest["tls"] is True
    # signed with the provisioned key the SuperExec's ServerApp was given
    assert node_main(["verify", str(out), "--kit", str(fed.kits / SITES[0])]) == 0
