"""The deployment kit: which files a provisioned site kit holds, and the SuperLink address.

A kit is written by the coordinator (`fedsynth-coordinator provision`) and read by
the hospital's node (`fedsynth-node start`); both sides must agree on its file
names, on the keys of `node.toml` and on what a valid site name and SuperLink
address are, so those live here, in the shared contract.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from protocols.errors import FedsynthError

NODE_TOML = "node.toml"
CA_CERT = "ca.pem"
NODE_AUTH_KEY = "node-auth.key"
NODE_AUTH_PUB = "node-auth.pub"
MANIFEST_SIGNING_PUB = "manifest-signing.pub"
SCHEMA_COPY = "schema.yaml"
KIT_README = "README.md"
COORDINATOR_KIT = "coordinator"

DEFAULT_RUNTIME_PORT = 9094
DEFAULT_STATE_DIR = "state"
# The head file's default place: a folder of its own in the kit, not beside node-auth.key,
# whose folder the node's app sandbox grants file by file (node.sandbox).
DEFAULT_LEDGER_HEAD = "ledger-anchor/ledger-head"
LEGACY_LEDGER_HEAD = "ledger-head"  # where nodes before that kept it; `start` moves it
RECORDS_PLACEHOLDER = "/path/to/site-records.csv"
SCHEMA_PLACEHOLDER = "/path/to/consortium-schema.yaml"
# File modes of what a kit holds, wherever it is written (the hospital's keygen, the
# coordinator's provisioning): private keys and their folders owner-only.
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644
PRIVATE_DIR = 0o700


@dataclass(frozen=True)
class TomlKey:
    """A key of node.toml: the coordinator's kit writer and the node's reader use these
    names, so the two cannot drift apart."""

    section: str
    key: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key}"


SITE_NAME = TomlKey("site", "name")
SUPERLINK_ADDRESS = TomlKey("superlink", "address")
ROOT_CERTIFICATES = TomlKey("superlink", "root-certificates")
AUTH_PRIVATE_KEY = TomlKey("superlink", "auth-private-key")
SCHEMA = TomlKey("data", "schema")
RECORDS = TomlKey("data", "records")
STATE_DIR = TomlKey("node", "state-dir")
RUNTIME_PORT = TomlKey("node", "runtime-port")
FEDERATED_EVALUATION = TomlKey("node", "federated-evaluation")
EPSILON_BUDGET = TomlKey("privacy", "epsilon-budget")
DELTA_BUDGET = TomlKey("privacy", "delta-budget")
# Where the node keeps its ledger's head, outside the state folder (optional; default
# DEFAULT_LEDGER_HEAD in the kit folder; a read-only kit names a writable place).
LEDGER_HEAD = TomlKey("node", "ledger-head")
# The sha256 of the one app bundle (FAB) this node runs studies of: the release the
# consortium agreed on (`protocols.release.app_bundle`); any other bundle is refused before
# its code runs, and the node runs its own installed ClientApp (`node.app_executor`).
APP_SHA256 = TomlKey("app", "sha256")
# The hospital's caps on any one study (`[limits]`, optional, `node.study_caps` has the
# defaults): checked before anything of the study is allocated.
MAX_EPSILON = TomlKey("limits", "max-epsilon-per-study")
MAX_DELTA = TomlKey("limits", "max-delta-per-study")
MAX_TOTAL_STEPS = TomlKey("limits", "max-rounds-times-steps")
MAX_MODEL_PARAMETERS = TomlKey("limits", "max-model-parameters")
MAX_ROWS_TO_SCORE = TomlKey("limits", "max-rows-to-score")
# Their defaults (the node applies them; the kit writer shows them in node.toml).
CAP_DEFAULTS: dict[TomlKey, float | int] = {
    MAX_EPSILON: 5.0, MAX_DELTA: 1e-5, MAX_TOTAL_STEPS: 2_000,
    MAX_MODEL_PARAMETERS: 1_000_000, MAX_ROWS_TO_SCORE: 100_000}

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class KitError(FedsynthError):
    """A kit, its node.toml or a provisioning request is missing or malformed."""


@dataclass(frozen=True)
class SuperLinkAddress:
    """Where SuperNodes dial: a DNS name or IP literal, and a TCP port."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None

    @property
    def is_loopback(self) -> bool:
        ip = _ip(self.host)
        return self.host.lower() == "localhost" if ip is None else ip.is_loopback

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> SuperLinkAddress:
    """Parse `HOST:PORT` (IPv6 as `[addr]:PORT`); refuse anything Flower could not dial."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text.strip())
    if not match:
        raise KitError(f"SuperLink address {text!r} is not HOST:PORT (for example "
                       "coordinator.example.org:9092, 10.0.0.5:9092 or [2001:db8::5]:9092).")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise KitError(f"SuperLink address {text!r}: port {port} is outside 1-65535.")
    if _ip(host) is None and not all(_DNS_LABEL.match(p) for p in host.rstrip(".").split(".")):
        raise KitError(f"SuperLink address {text!r}: {host!r} is neither an IP address nor "
                       "a DNS name (letters, digits and '-' in dot-separated labels).")
    return SuperLinkAddress(host, port)


def check_site_name(name: str) -> str:
    """A site name is a folder name, a Flower node name and a ledger key: keep it plain."""
    if not _SITE_NAME.match(name):
        raise KitError(f"Site name {name!r} is not allowed: use 1-64 letters, digits, '_' "
                       "or '-', starting with a letter or digit.")
    if name == COORDINATOR_KIT:
        raise KitError(f"Site name {name!r} is reserved for the coordinator's own kit.")
    return name


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
