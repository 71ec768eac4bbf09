"""`fedsynth-coordinator study` without a federation: bad input, the run config it fills
from the coordinator kit, and its verdict on a release folder (tests/deploy/
test_study_command.py runs it on a real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from coordinator.cohort import release_cohort
from coordinator.provisioning.signing_key import load_signing_key
from coordinator.study_command import StudyRequest, kit_run_config, release_problems
from protocols.plan import StudyPlan
from protocols.release.manifest import StudyRun
from protocols.release.verification import load_trusted_key
from simulation.cli import main as coordinator_main

SHIPPED = "ab" * 32


@pytest.fixture(scope="module")
def kits(tmp_path_factory, demo_registry) -> Path:
    out = tmp_path_factory.mktemp("kits")
    assert coordinator_main(["provision", "--sites", "siteA,siteB", "--out", str(out),
                             "--superlink", "fl.example.org:443"]) == 0
    (out / "schema.yaml").write_text(demo_registry.schema_yaml)
    return out


def _request(kits: Path, out: Path) -> StudyRequest:
    return StudyRequest("consortium", kits / "coordinator", kits / "schema.yaml", out)


def test_the_kit_fills_the_run_config_as_flower_reads_it(kits, tmp_path):
    config = parse_config_args([kit_run_config(_request(kits, tmp_path / "study"))])
    coordinator = (kits / "coordinator").resolve()
    assert config == {"engine": "deployment",
                      "schema-path": str((kits / "schema.yaml").resolve()),
                      "out-dir": str((tmp_path / "study").resolve()),
                      # the SuperLink behind the public proxy, as the kit's README starts it
                      "superlink-address": "127.0.0.1:9092",
                      "root-certificates": str(coordinator / "ca.pem"),
                      "signing-key": str(coordinator / "manifest-signing.key")}
    # What the operator adds comes after, so it wins (the ServerApp's own view of a path).
    assert parse_config_args([kit_run_config(_request(kits, tmp_path / "study")),
                              'superlink-address="127.0.0.1:9000" epsilon=2.0'])[
        "superlink-address"] == "127.0.0.1:9000"


@pytest.mark.parametrize("args, message", [
    (["--kit", "{tmp}"], "is not a coordinator kit: it lacks ca.pem"),
    (["--kit", "{kits}/coordinator", "--schema", "{tmp}/absent.yaml"],
     "The schema {tmp}/absent.yaml does not exist"),
    (["--kit", "{kits}/coordinator", "--connection", "other"], "Two connections given"),
])
def test_bad_input_is_one_paragraph_and_exit_2_before_anything_runs(kits, tmp_path, capsys,
                                                                    args, message):
    base = {"--kit": "{kits}/coordinator", "--schema": "{kits}/schema.yaml",
            "--out": "{tmp}/out"}
    given = dict(zip(args[::2], args[1::2]))
    argv = ["study", "consortium"] + [part for key, value in {**base, **given}.items()
                                      for part in (key, value)]
    argv = [a.format(kits=kits, tmp=tmp_path) for a in argv]
    assert coordinator_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsynth-coordinator: error: ")
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def _released(kits: Path, folder: Path, demo_registry, demo_schema, run: StudyRun) -> Path:
    release_cohort(demo_registry.sites["hospital-01"].head(20), folder, schema=demo_schema,
                   plan=StudyPlan(rounds=2).issued(), sites={}, contributions={},
                   engine="deployment", tls=True, run=run,
                   signing_key=load_signing_key(kits / "coordinator" /
                                                "manifest-signing.key"))
    return folder


def test_only_this_runs_verified_release_of_the_shipped_bundle_is_a_success(
        kits, tmp_path, demo_registry, demo_schema):
    key = load_trusted_key(kits / "coordinator" / "manifest-signing.pub")
    folder = _released(kits, tmp_path / "study", demo_registry, demo_schema,
                       StudyRun(41, SHIPPED))
    assert release_problems(folder, key, SHIPPED, 41) == []
    assert release_problems(folder, key, SHIPPED, 42) == [
        f"the release in {folder} is Flower run 41's, not this study's run 42 (left from an "
        "earlier study)"]
    assert release_problems(folder, key, "cd" * 32, 41) == [
        f"the manifest records app bundle sha256 {SHIPPED}, not the one shipped, {'cd' * 32}"]
    assert release_problems(tmp_path / "empty", key, SHIPPED, 41) == [
        f"{tmp_path / 'empty'} holds no manifest.json: nothing was released"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["rows"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert release_problems(folder, key, SHIPPED, 41)[0].startswith(
        f"{folder} does not verify: manifest.json")


def test_a_study_flower_never_started_exits_1_saying_where_to_look(kits, tmp_path):
    """No such connection in this FLWR_HOME: `flwr run` fails; the command says so in one
    paragraph after Flower's own output."""
    code = "import sys; from simulation.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "study", "no-such-connection", "--kit",
         str(kits / "coordinator"), "--schema", str(kits / "schema.yaml"), "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "app bundle sha256 " in result.stdout
    assert result.stderr.startswith("fedsynth-coordinator: the study failed: `flwr run` "
                                     "exited with status ")
    assert "holds no manifest.json" in result.stderr and "Traceback" not in result.stderr
