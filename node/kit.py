"""Reading and checking a site's deployment kit before the node connects to anyone.

`read_kit` turns the kit's `node.toml` into a `NodeKit` (paths resolved against
the kit folder), naming the file and key of anything missing or malformed.
`check_kit` then refuses, before any network traffic: a private key others can
read, a CA or key that does not load, a records file that breaks the schema or
holds fewer than `MIN_SITE_RECORDS` records, and a fedsynth synthetic cohort
passed off as records (unless the operator passes --train-on-synthetic). A node that starts has
therefore already proved it can train on every row it holds.
"""

from __future__ import annotations

import math
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

from protocols import kit_layout as layout
from protocols.kit_layout import KitError, SuperLinkAddress, check_site_name, parse_address
from protocols.release.provenance import refuse_synthetic_records
from protocols.records import check_file
from protocols.schema import load_schema
from protocols.privacy.site_limits import MIN_SITE_RECORDS

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
        site=setting.site_name(),
        superlink=setting.address(),
        root_certificates=directory / setting.text("superlink", "root-certificates"),
        auth_private_key=directory / setting.text("superlink", "auth-private-key"),
        schema=directory / setting.text("data", "schema"),
        records=directory / setting.text("data", "records"),
        state_dir=directory / setting.text("node", "state-dir"),
        runtime_port=setting.port("node", "runtime-port"),
        federated_evaluation=setting.flag("node", "federated-evaluation"),
        epsilon_budget=setting.budget("privacy", "epsilon-budget"),
        delta_budget=setting.delta_budget("privacy", "delta-budget"))


def check_kit(kit: NodeKit) -> int:
    """Refuse a kit the node must not start with; return the number of valid records."""
    _check_private_key(kit.auth_private_key)
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
    """Create the state folder (privacy ledger, study state) readable by this user only."""
    try:
        kit.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"Cannot create the node's state folder {kit.state_dir}: "
                       f"{exc.strerror}.") from None


def _check_private_key(path: Path) -> None:
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
                       "node-auth.key from the kit the coordinator provisioned.")


def _check_ca(path: Path) -> None:
    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise KitError(f"Cannot read the consortium CA {path}: {exc.strerror}.") from None
    except ValueError:
        raise KitError(f"{path} is not a PEM certificate; use the ca.pem from the kit the "
                       "coordinator provisioned.") from None


class _Settings:
    """Typed access to node.toml, each refusal naming the file, section and key."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self._doc, self._path = doc, path

    def _value(self, section: str, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        table = self._doc.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if value is None:
            raise KitError(f"{self._path}: [{section}] {key} is missing; it must be {what}.")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise KitError(f"{self._path}: [{section}] {key} = {value!r} is invalid; it must "
                           f"be {what}.")
        return value

    def text(self, section: str, key: str) -> str:
        value = self._value(section, key, str, "a non-empty string (a path relative to the kit)")
        if not value.strip():
            raise KitError(f"{self._path}: [{section}] {key} is empty; it must name a file.")
        return value

    def site_name(self) -> str:
        return self._parsed("site", "name", "the site's name, in quotes", check_site_name)

    def address(self) -> SuperLinkAddress:
        return self._parsed("superlink", "address", 'HOST:PORT in quotes ("host:9092")',
                            parse_address)

    def _parsed(self, section: str, key: str, what: str, parse: Callable[[str], T]) -> T:
        """A text value run through the shared contract's parser, refusals prefixed with
        the file, section and key."""
        text = self._value(section, key, str, what)
        try:
            return parse(text)
        except KitError as exc:
            raise KitError(f"{self._path}: [{section}] {key}: {exc}") from None

    def port(self, section: str, key: str) -> int:
        port = self._value(section, key, int, "a TCP port number (1-65535)")
        if not 1 <= port <= 65535:
            raise KitError(f"{self._path}: [{section}] {key} = {port} is outside 1-65535.")
        return port

    def flag(self, section: str, key: str) -> bool:
        return self._value(section, key, bool, "true or false")

    def delta_budget(self, section: str, key: str) -> float:
        value = self.budget(section, key)
        if value >= 1:
            raise KitError(f"{self._path}: [{section}] {key} = {value} must be below 1.")
        return value

    def budget(self, section: str, key: str) -> float:
        value = float(self._value(section, key, (int, float), "a number above 0"))
        if not (math.isfinite(value) and value > 0):
            raise KitError(f"{self._path}: [{section}] {key} = {value} must be a finite number "
                           "above 0.")
        return value

