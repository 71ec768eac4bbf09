"""`fedsynth-node keygen`: the site's node-auth key pair is born at the hospital, owner-only,
never overwritten, and named by the fingerprint `ssh-keygen -l` shows."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cli_process import one_paragraph_error, run_cli
from protocols.node_keys import fingerprint, public_key_of, read_public_key_file


@pytest.fixture(scope="module")
def keygen(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("hospital") / "etc" / "fedsynth" / "kit"
    return folder, run_cli("fedsynth-node", "keygen", "--out", folder)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_an_owner_only_private_key_and_its_public_half(keygen):
    folder, result = keygen
    assert result.returncode == 0, result.stderr
    private, public = folder / "node-auth.key", folder / "node-auth.pub"
    assert _mode(private) == 0o600 and _mode(folder) == 0o700
    assert not _mode(public) & 0o022  # others may read it, nobody else write it
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert read_public_key_file(public) == public_key_of(key)


def test_keygen_prints_the_public_key_path_and_its_fingerprint(keygen):
    folder, result = keygen
    public = folder / "node-auth.pub"
    expected = fingerprint(public.read_bytes())
    assert f"Public key:  {public.resolve()}" in result.stdout
    assert f"Fingerprint: {expected}" in result.stdout
    if shutil.which("ssh-keygen"):  # the fingerprint a site's IT sees with its own tools
        listed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True,
                                text=True, check=True).stdout
        assert listed.split()[1] == expected


def test_keygen_refuses_to_overwrite_an_existing_key(keygen):
    folder, _ = keygen
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    err = one_paragraph_error(run_cli("fedsynth-node", "keygen", "--out", folder),
                              "fedsynth-node")
    assert "node-auth.key already exists" in err and "never replaces" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_keygen_refuses_a_folder_holding_only_a_public_key(tmp_path):
    (tmp_path / "node-auth.pub").write_text("ecdsa-sha2-nistp384 AAAA\n")
    err = one_paragraph_error(run_cli("fedsynth-node", "keygen", "--out", tmp_path),
                              "fedsynth-node")
    assert "node-auth.pub already exists" in err
    assert not (tmp_path / "node-auth.key").exists()
