"""`fedsynth-coordinator renew-cert`: a new SuperLink certificate under the same CA, for a new
period, with no site kit re-issued."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cli_process import one_paragraph_error, run_cli
from coordinator.provisioning.renewal import renew_certificate
from node.cli import main as node_main
from protocols.kit_layout import KitError
from simulation.cli import main as coordinator_main


@pytest.fixture
def kits(tmp_path: Path, capsys) -> Path:
    """A consortium whose SuperLink certificate runs for 30 days, its CA for ten years."""
    assert node_main(["keygen", "--out", str(tmp_path / "hospital")]) == 0
    out = tmp_path / "kits"
    assert coordinator_main(["provision", "--out", str(out), "--valid-days", "30",
                             "--site", f"siteA={tmp_path / 'hospital/node-auth.pub'}"]) == 0
    capsys.readouterr()
    return out


def _cert(kits: Path, name: str = "superlink.pem") -> x509.Certificate:
    return x509.load_pem_x509_certificate((kits / "coordinator" / name).read_bytes())


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_renewal_keeps_the_ca_and_issues_a_longer_certificate_it_verifies(kits):
    coordinator = kits / "coordinator"
    ca_files = {n: (coordinator / n).read_bytes() for n in ("ca.pem", "ca.key")}
    site_kit = _listing(kits / "siteA")
    old, old_key = _cert(kits), (coordinator / "superlink.key").read_bytes()
    result = run_cli("fedsynth-coordinator", "renew-cert", "--out", kits, "--valid-days", "400")
    assert result.returncode == 0, result.stderr
    new, ca = _cert(kits), _cert(kits, "ca.pem")
    assert {n: (coordinator / n).read_bytes() for n in ca_files} == ca_files
    assert _listing(kits / "siteA") == site_kit  # nothing to re-issue to the sites
    new.verify_directly_issued_by(ca)
    assert new.serial_number != old.serial_number
    assert new.not_valid_before_utc >= old.not_valid_before_utc
    assert new.not_valid_after_utc - new.not_valid_before_utc >= dt.timedelta(days=400)
    assert new.not_valid_after_utc > old.not_valid_after_utc + dt.timedelta(days=300)
    assert (new.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            == old.extensions.get_extension_for_class(x509.SubjectAlternativeName))
    key_file = coordinator / "superlink.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() != old_key
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert key.public_key() == new.public_key()
    assert f'valid-until = "{new.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"' in (
        coordinator / "consortium.toml").read_text()
    assert "Restart the SuperLink" in result.stdout
    assert not [p for p in coordinator.iterdir() if p.name.startswith(".")]


def test_a_renewal_near_the_end_of_the_period_starts_a_new_one(kits):
    old = _cert(kits)
    later = old.not_valid_after_utc - dt.timedelta(days=2)
    renewal = renew_certificate(kits, 365, now=later)
    new = _cert(kits)
    new.verify_directly_issued_by(_cert(kits, "ca.pem"))
    assert new.not_valid_before_utc > old.not_valid_after_utc - dt.timedelta(days=3)
    assert new.not_valid_after_utc == renewal.valid_until >= later + dt.timedelta(days=364)
    assert not renewal.capped_by_ca


def test_a_renewal_never_outlives_the_ca_and_an_expiring_ca_is_refused(kits):
    ca = _cert(kits, "ca.pem")
    renewal = renew_certificate(kits, 365, now=ca.not_valid_after_utc - dt.timedelta(days=100))
    assert renewal.capped_by_ca and _cert(kits).not_valid_after_utc <= ca.not_valid_after_utc
    before = _listing(kits)
    with pytest.raises(KitError, match="Provision a new consortium"):
        renew_certificate(kits, 365, now=ca.not_valid_after_utc - dt.timedelta(hours=1))
    assert _listing(kits) == before


def test_renewal_without_the_ca_key_is_refused_with_one_paragraph(kits):
    (kits / "coordinator" / "ca.key").rename(kits.parent / "ca.key.offline")
    before = _listing(kits)
    err = one_paragraph_error(run_cli("fedsynth-coordinator", "renew-cert", "--out", kits),
                              "fedsynth-coordinator")
    assert "ca.key is not there" in err and "Nothing was changed" in err
    assert _listing(kits) == before
