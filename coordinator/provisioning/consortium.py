"""Provisioning a consortium: the coordinator's kit and one kit per hospital.

`provision` creates (or, when `OUT/coordinator/` exists, reuses) the consortium CA,
the SuperLink's TLS certificate and the manifest-signing key, and writes a kit for
each new site: the CA, the manifest-verification key, a filled `node.toml`, and the
site's node-auth public key, which the coordinator also enrols (`enrolled/<site>.pub`).

A real site sends that public key itself (`--site NAME=PATH.pub`, made by
`fedsynth-node keygen` at the hospital): its private key is never on the coordinator's
side. The demo mode (`--sites a,b,c`) instead generates each site's key pair here and
puts the private half in the site's kit; it is for a loopback demo on one machine.

Adding a hospital later is the same command with the new site; keys are never
overwritten, and a key already enrolled for another site or revoked is refused. Every
check runs before anything is written, and writing goes through a staging folder
(`coordinator.provisioning.kit_staging`), so a refused or failed run leaves nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from coordinator.provisioning import certificates as certs
from coordinator.provisioning.kit_readmes import coordinator_readme, site_readme
from coordinator.provisioning.kit_staging import (KitFile, move_into_place, staging_folder,
                                                  write_tree)
from coordinator.provisioning.kit_texts import consortium_toml, node_toml
from coordinator.provisioning.signing_key import KEY_NAME as SIGNING_KEY
from protocols import kit_layout as kit
from protocols.kit_layout import KitError, SuperLinkAddress, check_site_name, parse_address
from protocols.node_keys import NodeAuthPublicKey, new_node_auth_key_pair, read_public_key_file
from protocols.release.app_bundle import release_sha256
from protocols.schema import load_schema

DEFAULT_SUPERLINK = "localhost:9092"
CONSORTIUM_TOML = "consortium.toml"
ENROLLED = "enrolled"
REVOKED = "revoked"
_COORDINATOR_PUBLIC = (kit.CA_CERT, "superlink.pem", kit.MANIFEST_SIGNING_PUB, CONSORTIUM_TOML)


@dataclass(frozen=True)
class ProvisionRequest:
    """What the coordinator asked for on the command line: either `site_keys` (each
    site's own public key file) or, for the loopback demo only, `sites` whose key pairs
    the coordinator generates."""

    out: Path
    sites: tuple[str, ...] = ()
    site_keys: tuple[tuple[str, Path], ...] = ()
    superlink: str | None = None  # None: the existing consortium's, else DEFAULT_SUPERLINK
    schema: Path | None = None
    epsilon_budget: float = 10.0
    delta_budget: float = 1e-4
    valid_days: int = 365  # the SuperLink certificate's; renewed under the same CA
    ca_valid_days: int = 3650


@dataclass(frozen=True)
class Consortium:
    """The public facts a new site kit needs; no private key of the coordinator's."""

    address: SuperLinkAddress
    ca_pem: bytes
    signing_pub: bytes
    sites: tuple[str, ...]
    created: dt.datetime
    valid_until: dt.datetime  # the SuperLink certificate's expiry
    ca_valid_until: dt.datetime


@dataclass(frozen=True)
class Provisioned:
    """What `provision` did, for the CLI to report."""

    out: Path
    consortium: Consortium
    new_sites: tuple[str, ...]
    reused: bool
    enrolled: tuple[NodeAuthPublicKey, ...]  # in the order of new_sites
    generated_keys: bool  # the demo mode: the site kits hold private keys made here


def provision(request: ProvisionRequest, now: dt.datetime | None = None) -> Provisioned:
    """Check the request, then write the kits; raise `KitError` before writing anything."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out, coordinator_dir = request.out, request.out / kit.COORDINATOR_KIT
    enrolments = _check_request(request, coordinator_dir)
    sites = tuple(enrolments)
    existing = read_consortium(coordinator_dir) if coordinator_dir.exists() else None
    address = _address(request.superlink, existing)
    schema_bytes = request.schema.read_bytes() if request.schema else None
    with staging_folder(out) as staging:
        # When fresh, staging/coordinator becomes the coordinator kit; otherwise it only
        # holds the additions (enrolled keys, rewritten summaries) for the existing one.
        staged_coordinator = staging / kit.COORDINATOR_KIT
        if existing is None:
            consortium, secrets = new_consortium(address, now, request.valid_days,
                                                 request.ca_valid_days)
            write_tree(staged_coordinator, secrets)
        else:
            consortium = existing
        enrolled = []
        for site, own_key in enrolments.items():
            files, public_key = site_kit(site, consortium, schema_bytes, request.epsilon_budget,
                                         request.delta_budget, own_key)
            write_tree(staging / site, files)
            write_tree(staged_coordinator / ENROLLED,
                       {f"{site}.pub": KitFile(public_key.file_bytes)})
            enrolled.append(public_key)
        consortium = replace(consortium, sites=tuple(sorted({*consortium.sites, *sites})))
        docs = coordinator_docs(consortium, coordinator_dir, request.schema)
        write_tree(staged_coordinator, docs)
        move_into_place(_moves(staging, out, sites, fresh=existing is None))
        if existing is not None:
            _replace_docs(staged_coordinator, coordinator_dir, docs)
    return Provisioned(out, consortium, sites, reused=existing is not None,
                       enrolled=tuple(enrolled), generated_keys=bool(request.sites))


def new_consortium(address: SuperLinkAddress, now: dt.datetime, valid_days: int,
                   ca_valid_days: int) -> tuple[Consortium, dict[str, KitFile]]:
    """A fresh CA, SuperLink certificate and signing key: the coordinator's secret files.
    The CA outlives the certificate, so the certificate can be renewed under it."""
    ca = certs.new_ca(f"fedsynth {address.host}", now, ca_valid_days)
    superlink = certs.superlink_certificate(ca, address, now, valid_days)
    signing = certs.manifest_signing_key_pair()
    files = {kit.CA_CERT: KitFile(ca.cert_pem), "ca.key": KitFile(ca.key_pem, secret=True),
             "superlink.pem": KitFile(superlink.cert_pem),
             "superlink.key": KitFile(superlink.key_pem, secret=True),
             SIGNING_KEY: KitFile(signing.private, secret=True),
             kit.MANIFEST_SIGNING_PUB: KitFile(signing.public)}
    valid_until = certs.certificate_expiry(superlink.cert_pem)
    ca_valid_until = certs.certificate_expiry(ca.cert_pem)
    return (Consortium(address, ca.cert_pem, signing.public, (), now, valid_until,
                       ca_valid_until), files)


def site_kit(site: str, consortium: Consortium, schema: bytes | None, epsilon_budget: float,
             delta_budget: float = 1e-4, own_key: NodeAuthPublicKey | None = None
             ) -> tuple[dict[str, KitFile], NodeAuthPublicKey]:
    """A hospital's kit files and the public key the coordinator enrols.

    With `own_key` (the site's own, made at the hospital) the kit holds no private key;
    without it (the demo) a key pair is made here and its private half put in the kit."""
    app_sha256 = release_sha256()
    files = {kit.CA_CERT: KitFile(consortium.ca_pem),
             kit.MANIFEST_SIGNING_PUB: KitFile(consortium.signing_pub),
             kit.NODE_TOML: KitFile(node_toml(site, consortium.address, schema is not None,
                                              epsilon_budget, delta_budget,
                                              app_sha256).encode()),
             kit.KIT_README: KitFile(site_readme(site, consortium.address,
                                                 own_key is not None, app_sha256).encode())}
    if own_key is None:
        pair = new_node_auth_key_pair()
        files[kit.NODE_AUTH_KEY] = KitFile(pair.private, secret=True)
        own_key = pair.public
    files[kit.NODE_AUTH_PUB] = KitFile(own_key.file_bytes)
    if schema is not None:
        files[kit.SCHEMA_COPY] = KitFile(schema)
    return files, own_key


def coordinator_docs(consortium: Consortium, coordinator_dir: Path, schema: Path | None
                     ) -> dict[str, KitFile]:
    """consortium.toml and README.md, rewritten whenever the set of sites changes."""
    toml = consortium_toml(consortium.address, consortium.sites, consortium.created,
                           consortium.valid_until, consortium.ca_valid_until)
    readme = coordinator_readme(coordinator_dir, consortium.address, consortium.sites, schema)
    return {CONSORTIUM_TOML: KitFile(toml.encode()), kit.KIT_README: KitFile(readme.encode())}


def read_consortium(coordinator_dir: Path) -> Consortium:
    """The existing consortium's public facts, from its coordinator kit."""
    missing = [n for n in _COORDINATOR_PUBLIC if not (coordinator_dir / n).is_file()]
    if missing:
        raise KitError(f"{coordinator_dir} exists but lacks {', '.join(missing)}: it is not a "
                       "complete coordinator kit. Restore it, or provision into a new --out.")
    path = coordinator_dir / CONSORTIUM_TOML
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        address = parse_address(doc["superlink"]["address"])
        sites = tuple(str(s) for s in doc["consortium"]["sites"])
        created = dt.datetime.fromisoformat(doc["consortium"]["created"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise KitError(f"{path} cannot be read ({exc}); it was written by `fedsynth-coordinator "
                       "provision` and should not be edited by hand.") from None
    ca_pem = (coordinator_dir / kit.CA_CERT).read_bytes()
    expiry = certs.certificate_expiry((coordinator_dir / "superlink.pem").read_bytes())
    signing_pub = (coordinator_dir / kit.MANIFEST_SIGNING_PUB).read_bytes()
    return Consortium(address, ca_pem, signing_pub, sites, created, expiry,
                      certs.certificate_expiry(ca_pem))


def enrolled_keys(coordinator_dir: Path) -> dict[str, NodeAuthPublicKey]:
    """The consortium's enrolled set: each site's public node key, by site name."""
    if not (coordinator_dir / CONSORTIUM_TOML).is_file():
        raise KitError(f"{coordinator_dir} is not a coordinator kit (no {CONSORTIUM_TOML}): "
                       "give as --out the kits folder `fedsynth-coordinator provision` wrote.")
    return {path.stem: read_public_key_file(path)
            for path in sorted((coordinator_dir / ENROLLED).glob("*.pub"))}


def _check_request(request: ProvisionRequest, coordinator_dir: Path
                   ) -> dict[str, NodeAuthPublicKey | None]:
    """Each new site and its own public key (None: the demo makes one); refuse anything
    that would write less than the whole request."""
    if request.sites and request.site_keys:
        raise KitError("Give either --site NAME=PATH.pub (each site's own public key) or the "
                       "demo's --sites, not both.")
    sites = tuple(check_site_name(s) for s in (request.sites or
                                                 [name for name, _ in request.site_keys]))
    if not sites:
        raise KitError("Name at least one site to provision: --site NAME=PATH.pub for each "
                       "hospital's public key (or, for a loopback demo, --sites siteA,siteB).")
    repeated = sorted({s for s in sites if sites.count(s) > 1})
    if repeated:
        raise KitError(f"Site name(s) {', '.join(repeated)} given more than once.")
    if request.superlink is not None:
        parse_address(request.superlink)
    if not (math.isfinite(request.epsilon_budget) and request.epsilon_budget > 0):
        raise KitError(f"--epsilon-budget must be a finite number above 0, not "
                       f"{request.epsilon_budget}.")
    if not (0 < request.delta_budget < 1):
        raise KitError(f"--delta-budget must lie between 0 and 1, not {request.delta_budget}.")
    if request.valid_days < 1:
        raise KitError(f"--valid-days must be at least 1, not {request.valid_days}.")
    if request.ca_valid_days < request.valid_days:
        raise KitError(f"--ca-valid-days ({request.ca_valid_days}) must be at least "
                       f"--valid-days ({request.valid_days}): the SuperLink certificate cannot "
                       "outlive the CA that signs it.")
    if request.schema is not None:
        load_schema(request.schema)  # a schema error names the file and the rule
    for site in sites:
        for path in (request.out / site, coordinator_dir / ENROLLED / f"{site}.pub"):
            if path.exists():
                raise KitError(f"Site {site!r} is already provisioned ({path} exists); its keys "
                               "are never overwritten. Nothing was written.")
    keys = {name: read_public_key_file(path) for name, path in request.site_keys}
    _refuse_known_keys(keys, coordinator_dir)
    return {site: keys.get(site) for site in sites}


def _refuse_known_keys(keys: dict[str, NodeAuthPublicKey], coordinator_dir: Path) -> None:
    """One key, one site: a key given twice, already enrolled or revoked is refused."""
    known = {}
    for folder in (REVOKED, ENROLLED):  # enrolled last: it names the site that holds it now
        for path in sorted((coordinator_dir / folder).glob("*.pub")):
            known[read_public_key_file(path)] = path
    seen: dict[NodeAuthPublicKey, str] = {}
    for site, key in keys.items():
        if key in seen:
            raise KitError(f"Sites {seen[key]!r} and {site!r} were given the same public key "
                           f"({key.fingerprint}); each site needs its own, made with "
                           "`fedsynth-node keygen`. Nothing was written.")
        seen[key] = site
        if key in known:
            state = "revoked" if known[key].parent.name == REVOKED else "already enrolled"
            raise KitError(f"The public key given for site {site!r} ({key.fingerprint}) is "
                           f"{state} ({known[key]}); a site enrols a key of its own that was "
                           "never used before. Nothing was written.")


def _address(requested: str | None, existing: Consortium | None) -> SuperLinkAddress:
    if existing is None:
        return parse_address(requested or DEFAULT_SUPERLINK)
    if requested is not None and parse_address(requested) != existing.address:
        raise KitError(f"This consortium's SuperLink is {existing.address} (its certificate "
                       f"names that host), not {requested}. Leave out --superlink to add sites, "
                       "or provision a new consortium into another --out.")
    return existing.address


def _moves(staging: Path, out: Path, sites: Sequence[str], fresh: bool) -> list[tuple[Path, Path]]:
    """Site kits first, then the coordinator kit (fresh) or each newly enrolled key."""
    moves = [(staging / site, out / site) for site in sites]
    coordinator_dir, staged = out / kit.COORDINATOR_KIT, staging / kit.COORDINATOR_KIT
    if fresh:
        return moves + [(staged, coordinator_dir)]
    (coordinator_dir / ENROLLED).mkdir(mode=0o700, exist_ok=True)
    return moves + [(staged / ENROLLED / f"{site}.pub", coordinator_dir / ENROLLED / f"{site}.pub")
                    for site in sites]


def _replace_docs(staged: Path, coordinator_dir: Path, docs: dict[str, KitFile]) -> None:
    """The summaries are the only files replaced: they describe, they hold no key."""
    for name in docs:
        (staged / name).replace(coordinator_dir / name)
