"""The coordinator's manifest-signing key: made once per user, owner-only, refused when unsafe;
and `fedsynth-coordinator verify`."""

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.cohort import release_cohort
from coordinator.provisioning.signing_key import default_key_path, load_signing_key, signing_key
from protocols.errors import FedsynthError
from protocols.plan import StudyPlan
from protocols.release.manifest import SitePrivacySpent
from protocols.release.signing import key_fingerprint
from simulation.cli import main as coordinator_main


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def test_a_users_key_is_made_once_owner_only_and_reused(config_home):
    first = signing_key(None)
    path = config_home / "fedsynth" / "manifest-signing.key"
    assert first.created and first.path == path == default_key_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    public = serialization.load_pem_public_key((path.parent / "manifest-signing.pub").read_bytes())
    assert key_fingerprint(public) == first.fingerprint
    again = signing_key(None)
    assert not again.created and again.fingerprint == first.fingerprint


def test_without_xdg_config_home_the_key_lives_under_dot_config(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_key_path() == tmp_path / ".config" / "fedsynth" / "manifest-signing.key"


def test_a_key_others_can_read_is_refused(config_home):
    path = signing_key(None).path
    path.chmod(0o640)
    with pytest.raises(FedsynthError, match=r"accessible to group or others \(mode 0640\).*"
                                            r"chmod 600"):
        signing_key(path)


def test_a_key_that_is_not_ed25519_is_refused(tmp_path):
    path = tmp_path / "ec.key"
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(FedsynthError, match="not an unencrypted Ed25519 private key"):
        load_signing_key(path)
    with pytest.raises(FedsynthError, match="Cannot read the manifest-signing key"):
        load_signing_key(tmp_path / "absent.key")


def test_simulate_refuses_a_bad_signing_key_before_running_anything(tmp_path, demo_registry,
                                                                    capsys):
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    data = []
    for name in ("hospital-01", "hospital-02"):
        data += ["--data", str(tmp_path / f"{name}.csv")]
        demo_registry.sites[name].to_csv(data[-1], index=False)
    key = tmp_path / "world-readable.key"
    key.write_text("whatever")
    key.chmod(0o644)
    out = tmp_path / "out"
    code = coordinator_main(["simulate", "--schema", str(schema), *data, "--out", str(out),
                             "--signing-key", str(key)])
    err = capsys.readouterr().err
    assert code == 2 and "accessible to group or others" in err and "Traceback" not in err
    assert not out.exists()


@pytest.fixture
def release(tmp_path, config_home, demo_registry, demo_schema) -> Path:
    folder = tmp_path / "cohort"
    release_cohort(demo_registry.sites["hospital-03"].head(30), folder, schema=demo_schema,
                   plan=StudyPlan(rounds=1), sites={"a": SitePrivacySpent(1.0, 5),
                                                    "b": SitePrivacySpent(1.0, 5)},
                   contributions={"a": [1], "b": [1]}, engine="simulation",
                   signing_key=signing_key(None).key)
    return folder


def test_coordinator_verify_pins_its_own_public_key(release, config_home, capsys):
    public = config_home / "fedsynth" / "manifest-signing.pub"
    assert coordinator_main(["verify", str(release), "--public-key", str(public)]) == 0
    fingerprint = json.loads((release / "manifest.json").read_text())["signature"][
        "key_fingerprint"]
    assert capsys.readouterr().out.startswith(
        f"verified: 2 files, signed by key {fingerprint} (trusted)")


def test_coordinator_verify_names_a_changed_manifest_and_exits_1(release, capsys):
    path = release / "manifest.json"
    path.write_text(path.read_text().replace('"rows": 30', '"rows": 31'))
    assert coordinator_main(["verify", str(release)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fedsynth-coordinator: {release} does NOT verify (1 problem):")
    assert "the manifest was edited after it was signed" in err


def test_coordinator_verify_refuses_a_public_key_that_is_not_one(release, tmp_path, capsys):
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert coordinator_main(["verify", str(release), "--public-key", str(bad)]) == 2
    assert "is not an Ed25519 public key" in capsys.readouterr().err
