"""`fedsynth-node verify`: a hospital checks a released cohort against its kit's key.

The consortium is provisioned for real (`fedsynth-coordinator provision`) and
the cohort released by the coordinator's own `release_cohort`, signed with the
coordinator kit's manifest-signing.key; the node checks it with the site kit.
"""

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.cohort import release_cohort
from coordinator.provisioning.signing_key import load_signing_key
from node.cli import main as node_main
from protocols.plan import StudyPlan
from protocols.release.app_bundle import release_sha256
from protocols.release.manifest import SitePrivacySpent, StudyRun
from simulation.cli import main as coordinator_main


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kits")
    assert coordinator_main(["provision", "--sites", "siteA,siteB", "--out", str(out)]) == 0
    return out


def _release(folder: Path, cohort, schema, key: Ed25519PrivateKey) -> Path:
    """Signed claims about two sites that are not the kits' (the kits' own ledgers are
    compared with a manifest in tests/node/test_ledger_rollback.py)."""
    release_cohort(cohort, folder, schema=schema, plan=StudyPlan(rounds=2),
                   sites={"siteX": SitePrivacySpent(1.9, 40), "siteY": SitePrivacySpent(1.8, 40)},
                   contributions={"siteX": [1, 2], "siteY": [1, 2]}, engine="deployment",
                   signing_key=key, tls=True,
                   run=StudyRun(run_id=7, app_sha256=release_sha256()))  # the kits' pin
    return folder


@pytest.fixture
def cohort(tmp_path, kits, demo_registry, demo_schema) -> Path:
    key = load_signing_key(kits / "coordinator" / "manifest-signing.key")
    frame = demo_registry.sites["hospital-01"].head(50)
    return _release(tmp_path / "cohort", frame, demo_schema, key)


def test_a_released_cohort_verifies_against_the_site_kit(cohort, kits, capsys):
    assert node_main(["verify", str(cohort), "--kit", str(kits / "siteA")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verified: 2 files, signed by key ") and "(trusted)" in out
    assert "The manifest says nothing about site siteA." in out


def test_without_a_key_the_node_says_the_signer_is_not_pinned(cohort, capsys):
    assert node_main(["verify", str(cohort)]) == 3
    out = capsys.readouterr().out
    assert "(not pinned)" in out and "compare the fingerprint" in out


def test_each_mismatching_file_gets_one_line_and_exit_1(cohort, kits, capsys):
    data = bytearray((cohort / "synthetic.csv").read_bytes())
    data[40] ^= 0x20
    (cohort / "synthetic.csv").write_bytes(bytes(data))
    (cohort / "synthetic.parquet").unlink()
    assert node_main(["verify", str(cohort), "--kit", str(kits / "siteB")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == f"fedsynth-node: {cohort} does NOT verify (2 problems):"
    assert lines[1].startswith("  synthetic.csv: sha256 differs (manifest ")
    assert lines[2] == "  synthetic.parquet: listed in the manifest but missing"
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_cohort_signed_by_another_key_fails_against_the_kit(tmp_path, kits, demo_registry,
                                                             demo_schema, capsys):
    folder = _release(tmp_path / "forged", demo_registry.sites["hospital-02"].head(20),
                      demo_schema, Ed25519PrivateKey.generate())
    assert node_main(["verify", str(folder), "--kit", str(kits / "siteA")]) == 1
    assert "not by the trusted key" in capsys.readouterr().err


def test_bad_usage_exits_2_with_one_paragraph(tmp_path, cohort, capsys):
    assert node_main(["verify", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert node_main(["verify", str(cohort), "--kit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Cannot read the public key" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        node_main(["verify", str(cohort), "--kit", str(tmp_path), "--public-key", str(tmp_path)])
    assert usage.value.code == 2


def test_verify_kit_compares_the_manifests_app_bundle_with_the_kits_pin(
        tmp_path, kits, demo_registry, demo_schema, capsys):
    """The node runs only the bundle its kit pins ([app] sha256): a cohort whose manifest
    records another bundle was not made by the release this site agreed to."""
    key = load_signing_key(kits / "coordinator" / "manifest-signing.key")
    folder = tmp_path / "cohort"
    release_cohort(demo_registry.sites["hospital-01"].head(20), folder, schema=demo_schema,
                   plan=StudyPlan(rounds=2).issued(), sites={}, contributions={},
                   engine="deployment", signing_key=key, tls=True,
                   run=StudyRun(run_id=42, app_sha256="ab" * 32))
    kit = tmp_path / "siteA"
    shutil.copytree(kits / "siteA", kit)
    provisioned = (kit / "node.toml").read_text()
    pinned = f'sha256 = "{release_sha256()}"'
    assert pinned in provisioned  # every kit pins the release that provisioned it

    def pin(sha256: str) -> None:
        (kit / "node.toml").write_text(provisioned.replace(pinned, f'sha256 = "{sha256}"'))

    pin("ab" * 32)
    assert node_main(["verify", str(folder), "--kit", str(kit)]) == 0
    capsys.readouterr()
    pin("cd" * 32)
    assert node_main(["verify", str(folder), "--kit", str(kit)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "ab" * 32 in err[0] and "cd" * 32 in err[0], err
    assert err[0].startswith("fedsynth-node: the manifest records app bundle sha256 ")


def test_state_dir_goes_with_kit(cohort, tmp_path, capsys):
    """`--state-dir` names the ledger the claims are compared with (a node started with
    `start --state-dir`); without a kit there are no claims to compare."""
    assert node_main(["verify", str(cohort), "--public-key",
                      str(tmp_path / "unused.pub"), "--state-dir", str(tmp_path)]) == 2
    assert "goes with --kit" in capsys.readouterr().err
