"""The configuration files of a kit, as text: a site's node.toml and consortium.toml.

Pure functions; `coordinator.provisioning.consortium` writes what they return. TOML strings
are written with JSON escapes, which TOML basic strings share.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from protocols import kit_layout as kit
from protocols.kit_layout import SuperLinkAddress


def node_toml(site: str, address: SuperLinkAddress, has_schema: bool,
              epsilon_budget: float, delta_budget: float, app_sha256: str,
              runtime_port: int = kit.DEFAULT_RUNTIME_PORT) -> str:
    """A site's node configuration; relative paths resolve against the kit folder. Its
    sections and keys are the contract's (`protocols.kit_layout`), as the node reads them.
    `app_sha256` pins the release's app bundle: the only study code the node will run."""
    schema = kit.SCHEMA_COPY if has_schema else kit.SCHEMA_PLACEHOLDER
    settings = [
        (kit.SITE_NAME, _s(site), ""),
        (kit.SUPERLINK_ADDRESS, _s(str(address)), ""),
        (kit.ROOT_CERTIFICATES, _s(kit.CA_CERT), ""),
        (kit.AUTH_PRIVATE_KEY, _s(kit.NODE_AUTH_KEY), ""),
        (kit.SCHEMA, _s(schema), ""),
        (kit.RECORDS, _s(kit.RECORDS_PLACEHOLDER),
         "placeholder; `fedsynth-node start --data` overrides it"),
        (kit.STATE_DIR, _s(kit.DEFAULT_STATE_DIR),
         "the node's privacy ledger and study state live here"),
        (kit.RUNTIME_PORT, str(runtime_port), ""),
        (kit.FEDERATED_EVALUATION, "true",
         "a study's plan decides whether it asks (and charges) for one"),
        (kit.EPSILON_BUDGET, repr(float(epsilon_budget)),
         "total epsilon this site will spend across all studies"),
        (kit.DELTA_BUDGET, repr(float(delta_budget)),
         "total delta across all studies (they add up, like epsilon)"),
        (kit.APP_SHA256, _s(app_sha256),
         "the fedsynth release's app bundle: any other is refused unrun"),
    ]
    lines = [f"# fedsynth node configuration for site {site}, written by "
             "`fedsynth-coordinator provision`.",
             "# Relative paths are relative to this kit folder. Start the node with:",
             "#   fedsynth-node start --kit . --data /path/to/site-records.csv"]
    section = None
    for key, value, comment in settings:
        if key.section != section:
            section = key.section
            lines += ["", f"[{section}]"]
        lines.append(f"{key.key} = {value}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines + _limits_comment()) + "\n"


def _limits_comment() -> list[str]:
    """The caps on one study, as comments showing the node's defaults: a hospital that
    wants its own uncomments the section and changes them."""
    return ["", "# Caps on any one study, checked before anything of it runs (a study asking "
            "more is", "# refused, and the node's log names the key). These are the "
            "defaults; to set your own,", "# uncomment [limits] and the keys to change, "
            "then restart the node.", f"# [{kit.MAX_EPSILON.section}]",
            *(f"# {key.key} = {value!r}" for key, value in kit.CAP_DEFAULTS.items())]


def consortium_toml(address: SuperLinkAddress, sites: Sequence[str], created: dt.datetime,
                    valid_until: dt.datetime, ca_valid_until: dt.datetime) -> str:
    """The coordinator's record of what was provisioned and until when it is valid."""
    site_list = ", ".join(_s(s) for s in sorted(sites))
    return f"""\
# The consortium as provisioned by `fedsynth-coordinator provision`. Re-run it with a new
# --site NAME=PATH.pub to add a hospital; the CA, SuperLink certificate and signing key are
# reused. `revoke --site NAME` removes one; `renew-cert` renews the SuperLink certificate.

[superlink]
address = {_s(str(address))}
host = {_s(address.host)}
port = {address.port}

[consortium]
sites = [{site_list}]  # the enrolled sites
created = {_s(_utc(created))}
valid-until = {_s(_utc(valid_until))}  # the SuperLink certificate expires then (renew-cert)
ca-valid-until = {_s(_utc(ca_valid_until))}  # the CA expires then: new kits for every site
"""


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
