"""Reading and checking a site's deployment kit before the node connects to anyone.

`read_kit` turns the kit's `node.toml` into a `NodeKit` (paths resolved against
the kit folder), naming the file and key of anything missing or malformed.
`check_kit` then refuses, before any network traffic: a private key others can
read, a CA or key that does not load, a records file that breaks the schema or
holds fewer than `MIN_SITE_RECORDS` records, a private key that is not the one whose
public half (the kit's node-auth.pub) the coordinator enrolled, and a fedsynth synthetic cohort
passed off as records (unless the operator passes --train-on-synthetic). A node that starts has
therefore already proved it can train on every row it holds.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from node.study_caps import CAP_KEYS, StudyCaps, read_caps
from protocols import __version__
from protocols import kit_layout as layout
from protocols.config import read_flag, read_positive, read_text, read_whole_number
from protocols.kit_layout import (KitError, SuperLinkAddress, TomlKey, check_site_name,
                                  parse_address)
from protocols.node_keys import public_key_of, read_public_key_file
from protocols.privacy.site_limits import MIN_SITE_RECORDS
from protocols.records import check_file
from protocols.release.app_bundle import is_sha256_hex, release_sha256
from protocols.release.provenance import refuse_synthetic_records
from protocols.schema import load_schema

T = TypeVar("T")


@dataclass(frozen=True)
class NodeKit:
    """A site's node configuration, every path absolute."""

    directory: Path
    site: str
    superlink: SuperLinkAddress
    root_certificates: Path
    auth_private_key: Path
    schema: Path
    records: Path
    state_dir: Path
    runtime_port: int
    federated_evaluation: bool
    epsilon_budget: float
    delta_budget: float
    train_on_synthetic: bool = False  # only ever from the operator's command line
    ledger_head: Path | None = None  # the head file, outside the state folder (default: kit)
    caps: StudyCaps = StudyCaps()
    app_sha256: str = ""  # the pinned app bundle ([app] sha256): the only study code run

    @property
    def ledger_head_file(self) -> Path:
        """Where the node keeps its ledger's head: node.toml's [node] ledger-head, else
        `ledger-anchor/ledger-head` in the kit folder (never inside the state folder it
        anchors); a kit whose head is still at the earlier default, `ledger-head` beside the
        key, reads it there until `start` moves it (`move_legacy_head_file`)."""
        if self.ledger_head is not None:
            return self.ledger_head
        default = self.directory / layout.DEFAULT_LEDGER_HEAD
        legacy = self.directory / layout.LEGACY_LEDGER_HEAD
        return legacy if legacy.is_file() and not default.exists() else default

    @property
    def manifest_public_key(self) -> Path:
        """The consortium's manifest-signing key: the node scores only a cohort it signed."""
        return self.directory / layout.MANIFEST_SIGNING_PUB


def read_kit(directory: Path) -> NodeKit:
    """Parse `directory/node.toml`; raise `KitError` naming the file and key at fault."""
    directory = directory.expanduser().resolve()
    path = directory / layout.NODE_TOML
    if not path.is_file():
        raise KitError(f"{path} does not exist: --kit must be the folder of a site kit made by "
                       "`fedsynth-coordinator provision` (it holds node.toml, ca.pem and "
                       "node-auth.key).")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KitError(f"{path} is not valid TOML: {exc}.") from None
    setting = _Settings(doc, path)
    return NodeKit(
        directory=directory,
        site=setting.parsed(layout.SITE_NAME, "the site's name, in quotes", check_site_name),
        superlink=setting.parsed(layout.SUPERLINK_ADDRESS, 'HOST:PORT in quotes ("host:9092")',
                                 parse_address),
        root_certificates=directory / setting.file(layout.ROOT_CERTIFICATES),
        auth_private_key=directory / setting.file(layout.AUTH_PRIVATE_KEY),
        schema=directory / setting.file(layout.SCHEMA),
        records=directory / setting.file(layout.RECORDS),
        state_dir=directory / setting.file(layout.STATE_DIR),
        runtime_port=setting.port(layout.RUNTIME_PORT),
        federated_evaluation=setting.flag(layout.FEDERATED_EVALUATION),
        epsilon_budget=setting.budget(layout.EPSILON_BUDGET),
        delta_budget=setting.budget(layout.DELTA_BUDGET, below=1.0),
        ledger_head=setting.optional_file(directory, layout.LEDGER_HEAD),
        caps=read_caps(setting.limits(), str(path), KitError),
        app_sha256=setting.parsed(layout.APP_SHA256, "the sha256 of the consortium's app "
                                  "bundle, 64 lowercase hex digits in quotes", _sha256_text))


def check_app_pin(kit: NodeKit) -> None:
    """Refuse a pin that is not the app bundle of the fedsynth installed here: the node runs
    its own installed ClientApp for the pinned bundle, so the two must be one release."""
    installed = release_sha256()
    if kit.app_sha256 != installed:
        raise KitError(
            f"{kit.directory / layout.NODE_TOML} pins the app bundle {kit.app_sha256} "
            f"({layout.APP_SHA256}), but the fedsynth {__version__} installed here builds "
            f"{installed}. The node runs only the release the consortium agreed on: install "
            "that release here (the coordinator's `fedsynth-node app-hash` prints its hash), "
            "or ask the coordinator for a kit made with this one.")


def check_kit(kit: NodeKit) -> int:
    """Refuse a kit the node must not start with; return the number of valid records."""
    _check_matches_public_key(kit.auth_private_key,
                              load_auth_private_key(kit.auth_private_key),
                              kit.directory / layout.NODE_AUTH_PUB)
    _check_ca(kit.root_certificates)
    if str(kit.records) == layout.RECORDS_PLACEHOLDER:
        raise KitError(f"No records file given: pass --data /path/to/records.csv (node.toml in "
                       f"{kit.directory} only has the placeholder {layout.RECORDS_PLACEHOLDER}).")
    refuse_synthetic_records(kit.records, kit.train_on_synthetic)
    validation = check_file(kit.records, load_schema(kit.schema))
    validation.raise_if_invalid()
    if validation.n_rows < MIN_SITE_RECORDS:
        # Told here, to the operator: once running, the node never declines for its size
        # (that answer would tell the coordinator the size).
        raise KitError(f"{kit.records} holds {validation.n_rows} records, fewer than the "
                       f"{MIN_SITE_RECORDS} any study needs: one patient would be too large a "
                       "share of the site, and its updates mostly noise. Wait until the "
                       "site has more patients before joining.")
    return validation.n_rows


def prepare_state_dir(kit: NodeKit) -> None:
    """Create the state folder (privacy ledger, study state) readable by this user only,
    and check that the ledger's head file can be written outside it."""
    _move_legacy_head_file(kit)
    try:
        kit.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"Cannot create the node's state folder {kit.state_dir}: "
                       f"{exc.strerror}.") from None
    head = kit.ledger_head_file
    if head.resolve().is_relative_to(kit.state_dir.resolve()):
        raise KitError(f"The ledger head file {head} is inside the state folder "
                       f"{kit.state_dir}, whose loss it is there to reveal: name a place "
                       f"outside it ({layout.LEDGER_HEAD} in node.toml, or --ledger-head).")
    try:
        head.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"Cannot create the folder of the ledger head file {head}: "
                       f"{exc.strerror}.") from None
    if not os.access(head.parent, os.W_OK):
        raise KitError(f"The node cannot write its ledger head file {head} (the folder "
                       f"{head.parent} is read-only to it). The node keeps its ledger's latest "
                       "hash there, outside the state folder, so that a lost or replaced "
                       f"ledger is noticed: set {layout.LEDGER_HEAD} in node.toml (or pass "
                       "--ledger-head) to a file in a writable folder that outlives the state "
                       "folder.")


def _move_legacy_head_file(kit: NodeKit) -> None:
    """Move a head file kept at the earlier default (beside the key) to its own folder."""
    legacy = kit.directory / layout.LEGACY_LEDGER_HEAD
    if kit.ledger_head is not None or kit.ledger_head_file != legacy:
        return
    default = kit.directory / layout.DEFAULT_LEDGER_HEAD
    try:
        default.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(legacy, default)
    except OSError as exc:
        raise KitError(f"Cannot move the ledger head file {legacy} to {default} "
                       f"({exc.strerror}); move it by hand, or name it with "
                       f"{layout.LEDGER_HEAD} in node.toml.") from None


def load_auth_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's node-auth private key, refused (one paragraph) when others may read it or
    it is not an unencrypted OpenSSH EC key."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KitError(f"Cannot read the node-auth private key {path}: {exc.strerror}.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KitError(f"The node-auth private key {path} is accessible to group or others "
                       f"(mode {stat.S_IMODE(mode):04o}); it proves this node's identity and "
                       f"must be private. Fix it with: chmod 600 {path}")
    try:
        key = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KitError(f"{path} is not an unencrypted OpenSSH EC private key; use the "
                       "node-auth.key that `fedsynth-node keygen` wrote for this site.")
    return key


def _check_matches_public_key(path: Path, key: ec.EllipticCurvePrivateKey,
                              public_path: Path) -> None:
    """The private key must be the one whose public half the coordinator enrolled (the kit's
    node-auth.pub); otherwise the SuperLink would refuse the node with no reason given."""
    if not public_path.is_file():
        return
    enrolled = read_public_key_file(public_path)
    if public_key_of(key) != enrolled:
        raise KitError(f"The node-auth private key {path} does not belong to {public_path}, the "
                       f"public key the coordinator enrolled for this site (fingerprint "
                       f"{enrolled.fingerprint}, actual {public_key_of(key).fingerprint}): the "
                       "SuperLink would refuse this node. Use the private key made with that "
                       "public key, or send the coordinator the node-auth.pub of this one.")


def _check_ca(path: Path) -> None:
    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise KitError(f"Cannot read the consortium CA {path}: {exc.strerror}.") from None
    except ValueError:
        raise KitError(f"{path} is not a PEM certificate; use the ca.pem from the kit the "
                       "coordinator provisioned.") from None


class _Settings:
    """Typed access to node.toml by the contract's keys, through the one parser of each
    kind of value (`protocols.config`); each refusal names the file, section and key."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self._doc, self._path = doc, path

    def _value(self, key: TomlKey, what: str) -> Any:
        table = self._doc.get(key.section)
        value = table.get(key.key) if isinstance(table, dict) else None
        if value is None:
            raise KitError(f"{self._path}: {key} is missing; it must be {what}.")
        return value

    def _where(self, key: TomlKey) -> str:
        return f"{self._path}: {key}"

    def file(self, key: TomlKey) -> str:
        value = self._value(key, "a non-empty string (a path relative to the kit)")
        if not isinstance(value, str):
            raise KitError(f"{self._where(key)} = {value!r} is invalid; it must be a "
                           "non-empty string (a path relative to the kit).")
        text = read_text(value)
        if text is None:
            raise KitError(f"{self._where(key)} is empty; it must name a file.")
        return text

    def parsed(self, key: TomlKey, what: str, parse: Callable[[str], T]) -> T:
        """A text value run through the shared contract's parser, refusals prefixed with
        the file, section and key."""
        value = self._value(key, what)
        if not isinstance(value, str):
            raise KitError(f"{self._where(key)} = {value!r} is invalid; it must be {what}.")
        try:
            return parse(value)
        except KitError as exc:
            raise KitError(f"{self._where(key)}: {exc}") from None

    def port(self, key: TomlKey) -> int:
        rule = "a TCP port number (1-65535)"
        port = read_whole_number(self._value(key, rule), self._where(key), KitError, rule)
        if not 1 <= port <= 65535:
            raise KitError(f"{self._where(key)} = {port} is outside 1-65535.")
        return port

    def table(self, section: str) -> dict[str, Any]:
        """An optional section (empty when absent); refused when it is not a table."""
        table = self._doc.get(section, {})
        if not isinstance(table, dict):
            raise KitError(f"{self._path}: [{section}] must be a table of keys.")
        return table

    def limits(self) -> dict[str, Any]:
        """The [limits] section; a key that is not a cap is refused, so that a misspelt
        cap is not silently left at its default."""
        table = self.table(layout.MAX_EPSILON.section)
        unknown = sorted(set(table) - {key.key for key in CAP_KEYS})
        if unknown:
            raise KitError(f"{self._path}: [{layout.MAX_EPSILON.section}] {unknown[0]} is not "
                           f"a cap; the caps are {', '.join(k.key for k in CAP_KEYS)}.")
        return table

    def optional_file(self, directory: Path, key: TomlKey) -> Path | None:
        """An optional path, relative to the kit folder; None when absent."""
        table = self._doc.get(key.section)
        if not isinstance(table, dict) or table.get(key.key) is None:
            return None
        return directory / self.file(key)

    def flag(self, key: TomlKey) -> bool:
        return read_flag(self._value(key, "true or false"), self._where(key), KitError)

    def budget(self, key: TomlKey, below: float = math.inf) -> float:
        return read_positive(self._value(key, "a number above 0"), self._where(key), KitError,
                             below)


def _sha256_text(text: str) -> str:
    if not is_sha256_hex(text):
        raise ValueError(f"{text!r} is not 64 lowercase hex digits")
    return text
