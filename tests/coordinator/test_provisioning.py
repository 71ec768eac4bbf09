"""`fedsynth-coordinator provision`: the kit tree, its keys and certificates, re-runs, refusals."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from simulation.cli import main as coordinator_main

SITES = ("siteA", "siteB", "siteC")
COORDINATOR_FILES = {"ca.pem", "ca.key", "superlink.pem", "superlink.key", "manifest-signing.key",
                     "manifest-signing.pub", "consortium.toml", "README.md",
                     "enrolled/siteA.pub", "enrolled/siteB.pub", "enrolled/siteC.pub"}
SITE_FILES = {"ca.pem", "node-auth.key", "node-auth.pub", "manifest-signing.pub", "node.toml",
              "schema.yaml", "README.md"}
PRIVATE_KEYS = ("coordinator/ca.key", "coordinator/superlink.key",
                "coordinator/manifest-signing.key", *(f"{s}/node-auth.key" for s in SITES))


@pytest.fixture
def schema_file(tmp_path: Path, demo_registry) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(demo_registry.schema_yaml)
    return path


@pytest.fixture
def kits(tmp_path: Path, schema_file: Path, capsys) -> Path:
    out = tmp_path / "kits"
    code = coordinator_main(["provision", "--sites", ",".join(SITES), "--out", str(out),
                             "--schema", str(schema_file)])
    assert code == 0, capsys.readouterr().err
    return out


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_provision_writes_the_kit_tree_as_specified(kits):
    assert {p.name for p in kits.iterdir()} == {"coordinator", *SITES}
    assert _files(kits / "coordinator") == COORDINATOR_FILES
    for site in SITES:
        assert _files(kits / site) == SITE_FILES
        assert stat.S_IMODE((kits / site).stat().st_mode) == 0o700
        toml = (kits / site / "node.toml").read_text()
        assert f'name = "{site}"' in toml and 'address = "localhost:9092"' in toml


def test_private_keys_are_owner_only(kits):
    for relative in PRIVATE_KEYS:
        assert stat.S_IMODE((kits / relative).stat().st_mode) == 0o600, relative


def test_a_site_private_key_exists_only_in_its_own_kit(kits):
    for site in SITES:
        secret = (kits / site / "node-auth.key").read_bytes()
        body = b"".join(secret.splitlines()[1:-1])  # the key material without PEM armour
        holders = [p for p in kits.rglob("*") if p.is_file()
                   and (secret in p.read_bytes() or body in b"".join(p.read_bytes().split()))]
        assert holders == [kits / site / "node-auth.key"]


def test_superlink_certificate_is_issued_by_the_ca_for_its_address(kits):
    ca = x509.load_pem_x509_certificate((kits / "coordinator/ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((kits / "coordinator/superlink.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    for site in SITES:
        assert (kits / site / "ca.pem").read_bytes() == (kits / "coordinator/ca.pem").read_bytes()


def test_superlink_certificate_names_a_public_dns_host(tmp_path, capsys):
    out = tmp_path / "kits"
    assert coordinator_main(["provision", "--sites", "h1", "--out", str(out),
                             "--superlink", "fl.consortium.example:443"]) == 0
    cert = x509.load_pem_x509_certificate((out / "coordinator/superlink.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fl.consortium.example" in sans.get_values_for_type(x509.DNSName)
    assert 'address = "fl.consortium.example:443"' in (out / "h1/node.toml").read_text()
    assert not (out / "h1/schema.yaml").exists()
    assert "/path/to/consortium-schema.yaml" in (out / "h1/node.toml").read_text()


def test_node_auth_key_is_ec_p384_and_enrolled_under_the_site_name(kits):
    for site in SITES:
        key = serialization.load_ssh_private_key((kits / site / "node-auth.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP384R1)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        assert (kits / site / "node-auth.pub").read_bytes().strip() == public
        assert (kits / "coordinator/enrolled" / f"{site}.pub").read_bytes().strip() == public


def test_manifest_signing_key_pair_matches(kits):
    private = serialization.load_pem_private_key(
        (kits / "coordinator/manifest-signing.key").read_bytes(), password=None)
    public = serialization.load_pem_public_key(
        (kits / "coordinator/manifest-signing.pub").read_bytes())
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public.verify(private.sign(b"manifest"), b"manifest")
    for site in SITES:
        assert ((kits / site / "manifest-signing.pub").read_bytes()
                == (kits / "coordinator/manifest-signing.pub").read_bytes())


def test_provision_prints_the_signing_keys_fingerprint_to_publish(tmp_path, capsys):
    from protocols.release.signing import key_fingerprint

    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path)]) == 0
    public = serialization.load_pem_public_key(
        (tmp_path / "coordinator/manifest-signing.pub").read_bytes())
    assert (f"Manifest-signing key fingerprint: {key_fingerprint(public)}"
            in capsys.readouterr().out)


def test_rerun_adds_a_site_reusing_the_consortium(kits, capsys):
    names = ("ca.pem", "ca.key", "superlink.pem", "superlink.key", "manifest-signing.key")
    before = {n: (kits / "coordinator" / n).read_bytes() for n in names}
    assert coordinator_main(["provision", "--sites", "siteD", "--out", str(kits)]) == 0
    assert "existing consortium" in capsys.readouterr().out
    assert {n: (kits / "coordinator" / n).read_bytes() for n in before} == before
    assert (kits / "siteD/ca.pem").read_bytes() == before["ca.pem"]
    assert (kits / "coordinator/enrolled/siteD.pub").is_file()
    assert '"siteD"' in (kits / "coordinator/consortium.toml").read_text()
    readme = (kits / "coordinator/README.md").read_text()
    assert "enrolled/siteD.pub consortium --name siteD" in readme
    assert not [p for p in kits.iterdir() if p.name.startswith(".")]


def test_the_coordinators_study_command_runs_secure_aggregation_over_every_site(kits):
    """Three sites: SecAgg+ with every site in every sum and one colluder assumed, as
    `simulate` chooses; re-provisioned with a fourth, the command counts it too."""
    readme = (kits / "coordinator/README.md").read_text()
    assert "secure-aggregation=true min-sites=3 colluders=1'" in readme
    assert "a site that drops out stops the study" in readme
    assert "replace those three keys with `secure-aggregation=false`" in readme
    assert coordinator_main(["provision", "--sites", "siteD", "--out", str(kits)]) == 0
    assert "secure-aggregation=true min-sites=4 colluders=1'" in (
        kits / "coordinator/README.md").read_text()


def test_the_coordinators_readme_runs_the_serverapp_beside_an_isolated_superlink(
        kits, schema_file):
    """deploy/README.md §2's layout: each process's files installed in its own folder and
    the database folder made before the SuperLink starts; the SuperLink runs no app code
    and a SuperExec, sharing a secret with it, runs the ServerApp."""
    readme = (kits / "coordinator/README.md").read_text()
    blocks = readme.split("```")[1::2]
    [install] = [b for b in blocks if "install -d" in b]
    assert "/var/lib/fedsynth-superlink" in install.split("install -m")[0]  # install -d
    assert f"install -m 0644 {schema_file} /etc/fedsynth/coordinator/schema.yaml" in install
    assert "superexec.secret" in install
    [superlink] = [b for b in blocks if "flower-superlink" in b]
    assert ("--isolation process --superexec-auth-secret-file /etc/fedsynth/superexec.secret"
            in superlink)
    assert "--database /var/lib/fedsynth-superlink/superlink-state.db" in superlink
    assert blocks.index(install) < blocks.index(superlink)
    [superexec] = [b for b in blocks if "flower-superexec" in b]
    assert "--superexec-auth-secret-file /etc/fedsynth/superexec.secret" in superexec
    assert 'signing-key="/etc/fedsynth/coordinator/manifest-signing.key"' in readme


def test_a_two_site_consortium_runs_without_secure_aggregation_and_is_told_why(tmp_path):
    assert coordinator_main(["provision", "--sites", "siteA,siteB", "--out",
                             str(tmp_path)]) == 0
    readme = (tmp_path / "coordinator/README.md").read_text()
    assert "secure-aggregation=true" not in readme.split("## 4.")[1].split("```")[1]
    assert "With 2 site(s) SecAgg+ stays off" in readme


def test_rerun_refuses_a_site_that_already_has_a_kit(kits, capsys):
    key = (kits / "siteB/node-auth.key").read_bytes()
    listing = sorted(p.as_posix() for p in kits.rglob("*"))
    assert coordinator_main(["provision", "--sites", "siteE,siteB", "--out", str(kits)]) == 2
    err = capsys.readouterr().err
    assert "siteB" in err and "already provisioned" in err and "Traceback" not in err
    assert (kits / "siteB/node-auth.key").read_bytes() == key
    assert sorted(p.as_posix() for p in kits.rglob("*")) == listing


def test_rerun_refuses_a_different_superlink(kits, capsys):
    assert coordinator_main(["provision", "--sites", "siteE", "--out", str(kits),
                             "--superlink", "other.example:9092"]) == 2
    assert "localhost:9092" in capsys.readouterr().err
    assert not (kits / "siteE").exists()


@pytest.mark.parametrize("args, message", [
    (["--sites", "siteA,bad name"], "'bad name' is not allowed"),
    (["--sites", "siteA,-dash"], "'-dash' is not allowed"),
    (["--sites", "siteA,siteA"], "more than once"),
    (["--sites", "coordinator"], "reserved"),
    (["--sites", "siteA", "--superlink", "no-port"], "not HOST:PORT"),
    (["--sites", "siteA", "--superlink", "host:70000"], "outside 1-65535"),
    (["--sites", "siteA", "--superlink", "host:0"], "outside 1-65535"),
    (["--sites", "siteA", "--superlink", "bad_host!:9092"], "neither an IP address"),
    (["--sites", "siteA", "--epsilon-budget", "0"], "--epsilon-budget"),
])
def test_bad_requests_are_refused_and_nothing_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "kits"
    assert coordinator_main(["provision", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("fedsynth-coordinator: error:")
    assert "Traceback" not in err
    assert not out.exists()
