"""The consortium's keys and certificates, built in memory (no file I/O here).

- a private CA (EC P-384) that SuperNodes trust instead of the public web PKI, so
  that only a SuperLink the consortium certified can receive a hospital's updates;
- the SuperLink's TLS certificate, signed by that CA, naming the address nodes dial; it
  is renewed under the same CA (`superlink_certificate` again), so no site kit changes;
- an Ed25519 key pair that signs released cohort manifests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.kit_layout import SuperLinkAddress

CURVE = ec.SECP384R1


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key, both PEM (the key unencrypted PKCS8)."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class KeyPair:
    """A private and a public key, each already encoded for the file it goes to."""

    private: bytes
    public: bytes


def new_ca(consortium: str, now: dt.datetime, valid_days: int) -> CertifiedKey:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium} consortium CA")])
    cert = (_base(name, name, key.public_key(), now, valid_days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA384()))
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _pkcs8(key))


def superlink_certificate(ca: CertifiedKey, address: SuperLinkAddress, now: dt.datetime,
                          valid_days: int) -> CertifiedKey:
    """The SuperLink's server certificate for `address` (see `subject_alt_names`), with a
    fresh key, valid from `now` for `valid_days` but never beyond the CA's own expiry."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(CURVE())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address.host)])
    days = min(valid_days, (ca_cert.not_valid_after_utc - now).days)
    cert = (_base(subject, ca_cert.subject, key.public_key(), now, days)
            .add_extension(x509.SubjectAlternativeName(subject_alt_names(address)),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _pkcs8(key))


def subject_alt_names(address: SuperLinkAddress) -> list[x509.GeneralName]:
    """The host nodes dial, plus localhost and 127.0.0.1.

    The loopback names are always there, not only for a loopback address: the
    coordinator's own `flwr` CLI and an on-host reverse proxy reach the SuperLink on
    127.0.0.1 and verify it against this certificate (Flower has no TLS server-name
    override). They are harmless elsewhere: only this consortium's CA vouches for them.
    """
    hosts = [address.host] + [h for h in ("localhost", "127.0.0.1") if h != address.host]
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host.rstrip(".").lower()))
    return names


def manifest_signing_key_pair() -> KeyPair:
    """The Ed25519 key pair that signs cohort manifests (PKCS8 / SubjectPublicKeyInfo PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(_pkcs8(key), public)


def certificate_expiry(cert_pem: bytes) -> dt.datetime:
    """When a PEM certificate stops being valid (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def load_ca(cert_pem: bytes, key_pem: bytes) -> CertifiedKey:
    """The CA from its files, checked: a CA certificate whose key is `key_pem`.

    Raises ValueError naming what is wrong; the caller says which files."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ValueError("the certificate is not a CA certificate")
    if key.public_key() != cert.public_key():
        raise ValueError("the key is not the certificate's key")
    return CertifiedKey(cert_pem, key_pem)


def _base(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
          now: dt.datetime, valid_days: int) -> x509.CertificateBuilder:
    # Backdated a few minutes so a node whose clock runs slightly behind still accepts it.
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=not cert_sign, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _pkcs8(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
