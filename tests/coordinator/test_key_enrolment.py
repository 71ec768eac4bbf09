"""`provision --site NAME=PATH.pub`: each hospital makes its key pair (`fedsynth-node keygen`)
and the coordinator enrols the public half only; no site private key ever exists on the
coordinator's side, and a bad public-key file is refused before anything is written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cli_process import one_paragraph_error, run_cli
from node.cli import main as node_main
from protocols.demo_registry import simulate_registry
from protocols.node_keys import PRIVATE_KEY_MARKER, public_key_of, read_public_key_file
from simulation.cli import main as coordinator_main

SITES = ("siteA", "siteB", "siteC")
COORDINATOR_OWN_KEYS = {"coordinator/ca.key", "coordinator/superlink.key",
                        "coordinator/manifest-signing.key"}


@pytest.fixture(scope="module")
def registry():
    return simulate_registry(seed=0, n_sites=5)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory, registry) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Three hospitals run keygen in their own folders; the coordinator provisions from the
    three .pub files alone into its own folder."""
    root = tmp_path_factory.mktemp("consortium")
    hospitals = root / "hospitals"
    for site in SITES:
        assert run_cli("fedsynth-node", "keygen", "--out", hospitals / site).returncode == 0
    schema = root / "schema.yaml"
    schema.write_text(registry.schema_yaml)
    out = root / "coordinator-side" / "kits"
    result = run_cli("fedsynth-coordinator", "provision", "--out", out,
                     "--superlink", "fl.consortium.example:443", "--schema", schema,
                     *[f"--site={s}={hospitals / s / 'node-auth.pub'}" for s in SITES])
    assert result.returncode == 0, result.stderr
    return hospitals, out, result


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _public_halves_of_private_keys(path: Path) -> list[bytes]:
    """The OpenSSH public line of every private key in `path` (PEM or OpenSSH armour)."""
    data = path.read_bytes()
    halves = []
    for loader in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
        try:
            key = loader(data, password=None)
        except (ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePrivateKey):
            halves.append(public_key_of(key).line)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            halves.append(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                        serialization.PublicFormat.OpenSSH))
    return halves


def test_no_site_private_key_exists_anywhere_on_the_coordinators_side(consortium):
    hospitals, out, _ = consortium
    site_keys = {s: read_public_key_file(hospitals / s / "node-auth.pub").line for s in SITES}
    holders = {p.relative_to(out).as_posix() for p in _files(out)
               if PRIVATE_KEY_MARKER in p.read_bytes()}
    assert holders == COORDINATOR_OWN_KEYS  # the coordinator's own three, nothing else
    for relative in holders:
        halves = _public_halves_of_private_keys(out / relative)
        assert halves and not set(halves) & set(site_keys.values()), relative
    for site in SITES:  # nor the key material, in any armour or file
        secret = (hospitals / site / "node-auth.key").read_bytes()
        body = b"".join(secret.splitlines()[1:-1])
        assert not [p for p in _files(out.parent)
                    if body in b"".join(p.read_bytes().split())], site


def test_each_site_kit_holds_the_sites_own_public_key_and_is_enrolled_under_its_name(
        consortium):
    hospitals, out, result = consortium
    for site in SITES:
        sent = (hospitals / site / "node-auth.pub").read_bytes()
        assert (out / site / "node-auth.pub").read_bytes() == sent
        assert (out / "coordinator" / "enrolled" / f"{site}.pub").read_bytes() == sent
        assert not (out / site / "node-auth.key").exists()
        enrolled = read_public_key_file(hospitals / site / "node-auth.pub")
        assert f"Enrolled {site}: node-auth key {enrolled.fingerprint}" in result.stdout
        assert "not in this kit" in (out / site / "README.md").read_text()
    assert "No site private key was made or kept here" in result.stdout
    assert "DEMO ONLY" not in result.stdout


def test_the_kit_unpacked_beside_the_hospitals_own_key_starts_a_node(consortium, registry,
                                                                    tmp_path, capsys):
    hospitals, out, _ = consortium
    kit = tmp_path / "kit"
    shutil.copytree(hospitals / "siteA", kit)
    for path in (out / "siteA").iterdir():
        shutil.copy2(path, kit / path.name)
    records = tmp_path / "records.csv"
    registry.sites["hospital-01"].to_csv(records, index=False)
    assert node_main(["start", "--kit", str(kit), "--data", str(records), "--dry-run"]) == 0
    assert f"--auth-supernode-private-key {kit.resolve() / 'node-auth.key'}" in (
        capsys.readouterr().out)
    shutil.copy2(hospitals / "siteB" / "node-auth.key", kit / "node-auth.key")  # wrong key
    assert node_main(["start", "--kit", str(kit), "--data", str(records), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "does not belong to" in err and "the SuperLink would refuse this node" in err


def test_the_demo_mode_says_it_is_demo_only(tmp_path, capsys):
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path)]) == 0
    assert "DEMO ONLY" in capsys.readouterr().out
    assert "DEMO ONLY" in (tmp_path / "siteA" / "README.md").read_text()


def _ssh_line(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH)


BAD_PUBLIC_KEYS = {
    "p256": (lambda: _ssh_line(ec.generate_private_key(ec.SECP256R1())),
             "its key type is 'ecdsa-sha2-nistp256'"),
    "ed25519": (lambda: _ssh_line(ed25519.Ed25519PrivateKey.generate()),
                "its key type is 'ssh-ed25519'"),
    "two keys": (lambda: b"\n".join([_ssh_line(ec.generate_private_key(ec.SECP384R1()))] * 2),
                 "it has 2 non-empty lines"),
    "empty": (lambda: b"", "it has 0 non-empty lines"),
    "truncated": (lambda: _ssh_line(ec.generate_private_key(ec.SECP384R1()))[:60],
                  "its key data does not decode"),
}


@pytest.mark.parametrize("case", list(BAD_PUBLIC_KEYS))
def test_a_bad_public_key_file_is_refused_with_one_paragraph(tmp_path, capsys, case):
    make, reason = BAD_PUBLIC_KEYS[case]
    bad = tmp_path / "siteA.pub"
    bad.write_bytes(make())
    out = tmp_path / "kits"
    assert coordinator_main(["provision", "--site", f"siteA={bad}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsynth-coordinator: error:") and err.count("\n") == 1
    assert f"{bad} is not a node-auth public key: {reason}" in err
    assert "ecdsa-sha2-nistp384" in err and "Nothing was written" in err
    assert not out.exists()


def test_a_private_key_sent_by_mistake_is_refused_and_called_exposed(consortium, tmp_path):
    """As a process: exit 2, one paragraph, no traceback, and not one byte written."""
    hospitals, out, _ = consortium
    before = {p: p.read_bytes() for p in _files(out)}
    err = one_paragraph_error(run_cli(
        "fedsynth-coordinator", "provision", "--out", out,
        "--site", f"siteD={hospitals / 'siteA' / 'node-auth.key'}",
        "--site", f"siteE={hospitals / 'siteB' / 'node-auth.pub'}"), "fedsynth-coordinator")
    assert "holds a PRIVATE key" in err and "exposed" in err
    assert {p: p.read_bytes() for p in _files(out)} == before


@pytest.mark.parametrize("second, message", [
    ("siteB.pub", "given the same public key"),
    ("missing.pub", "does not exist or is not a file"),
])
def test_a_request_with_one_bad_key_writes_nothing_at_all(consortium, tmp_path, capsys,
                                                          second, message):
    hospitals, _, _ = consortium
    shutil.copy2(hospitals / "siteB" / "node-auth.pub", tmp_path / "siteB.pub")
    out = tmp_path / "kits"
    assert coordinator_main(["provision", "--out", str(out),
                             "--site", f"siteB={tmp_path / 'siteB.pub'}",
                             "--site", f"siteC={tmp_path / second}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_key_already_enrolled_for_another_site_is_refused(consortium, capsys):
    hospitals, out, _ = consortium
    assert coordinator_main(["provision", "--out", str(out), "--site",
                             f"siteD={hospitals / 'siteA' / 'node-auth.pub'}"]) == 2
    assert "already enrolled" in capsys.readouterr().err
    assert not (out / "siteD").exists()


def test_site_and_demo_sites_cannot_be_mixed_and_site_needs_a_path(tmp_path, capsys):
    with pytest.raises(SystemExit):
        coordinator_main(["provision", "--out", str(tmp_path / "k"), "--sites", "a",
                          "--site", "b=b.pub"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert coordinator_main(["provision", "--out", str(tmp_path / "k"), "--site", "b"]) == 2
    assert "is not NAME=PATH.pub" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
