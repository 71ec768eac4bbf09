"""The README.md of each kit: the commands its holder runs, with this kit's paths.

The coordinator's README is for the consortium's operator (start the SuperLink and the
ServerApp's SuperExec, enrol sites, launch a study), in the layout of deploy/README.md; a site's README is for hospital IT and says what
the node needs from the network (one outbound port) and which file is secret.
Pure functions; `coordinator.provisioning.consortium` writes what they return.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coordinator.provisioning.signing_key import KEY_NAME as SIGNING_KEY
from protocols import kit_layout as kit
from protocols.kit_layout import SuperLinkAddress
from protocols.plan_defaults import (DEFAULT_FAMILY, SECURE_AGGREGATION_MIN_SITES,
                                     default_plan, secure_run_config)

SUPERLINK_LOCAL_PORT = 9092
FEDERATION = "consortium"
SCHEMA_PLACEHOLDER = "/path/to/consortium-schema.yaml"
RUN_ENVIRONMENT = ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0 "
                   "FLWR_DISABLE_UPDATE_CHECK=1")


@dataclass(frozen=True)
class CoordinatorLayout:
    """Where the coordinator's host keeps what it runs: deploy/README.md's layout, which
    deploy/systemd's units use too."""

    superlink: PurePosixPath  # the SuperLink's copies: ca.pem, superlink.pem, superlink.key
    serverapp: PurePosixPath  # the ServerApp's: ca.pem, manifest-signing.key, schema.yaml
    secret: PurePosixPath  # shared by the SuperLink and the ServerApp's SuperExec
    superlink_state: PurePosixPath  # the SuperLink's database
    studies: PurePosixPath  # each study's outputs


DEPLOYED = CoordinatorLayout(PurePosixPath("/etc/fedsynth/superlink"),
                             PurePosixPath("/etc/fedsynth/coordinator"),
                             PurePosixPath("/etc/fedsynth/superexec.secret"),
                             PurePosixPath("/var/lib/fedsynth-superlink"),
                             PurePosixPath("/var/lib/fedsynth-coordinator/studies"))


def local_superlink_address(address: SuperLinkAddress) -> str:
    """Where the coordinator's own processes reach the SuperLink: the consortium's address
    itself on a trial machine, else the loopback port behind the public reverse proxy."""
    return f"127.0.0.1:{address.port if address.is_loopback else SUPERLINK_LOCAL_PORT}"


def coordinator_readme(directory: Path, address: SuperLinkAddress, sites: Sequence[str],
                       schema: Path | None) -> str:
    """How the coordinator runs the SuperLink and the ServerApp, enrols `sites` and launches
    a study, in deploy/README.md's layout (`DEPLOYED`), with this kit's own paths."""
    d = directory.resolve()

    def q(name: str) -> str:
        return shlex.quote(str(d / name))

    local = local_superlink_address(address)
    port = local.rpartition(":")[2]
    register = "\n".join(f"flwr supernode register {q('enrolled/' + s + '.pub')} {FEDERATION}"
                         f" --name {shlex.quote(s)}" for s in sorted(sites))
    names = ", ".join(dict.fromkeys([address.host, "localhost", "127.0.0.1"]))
    schema_source = shlex.quote(str(schema.resolve()) if schema else SCHEMA_PLACEHOLDER)
    out = shlex.quote(str(d.parent))
    superlink, serverapp, secret = DEPLOYED.superlink, DEPLOYED.serverapp, DEPLOYED.secret
    study = DEPLOYED.studies / "study-001"
    secure_keys, secure_text = _secure_aggregation(len(sites))
    server_paths = (f'root-certificates="{serverapp / kit.CA_CERT}" '
                    f'signing-key="{serverapp / SIGNING_KEY}"{secure_keys}')
    study_command = (f"fedsynth-coordinator study {FEDERATION} --kit {shlex.quote(str(d))} "
                     f"--schema {serverapp / kit.SCHEMA_COPY} --out {study} "
                     f"--run-config {shlex.quote(server_paths)}")
    return f"""\
# Coordinator kit — stays with the consortium coordinator, never shipped

| file | what it is |
|---|---|
| `ca.pem`, `ca.key` | the consortium CA; `ca.key` signs certificates: keep it offline if you can |
| `superlink.pem`, `superlink.key` | the SuperLink's TLS certificate and key (valid for {names}) |
| `{SIGNING_KEY}`, `manifest-signing.pub` | Ed25519 key pair that signs released cohort manifests; the `.key` is **secret** (whoever holds it can sign cohorts in the consortium's name), every site kit holds the `.pub` |
| `enrolled/<site>.pub` | each enrolled site's node-auth public key, to register with the SuperLink |
| `revoked/`, `revocations.jsonl` | the keys of revoked sites, and when each was revoked |
| `consortium.toml` | SuperLink address ({address}), sites, creation date, expiry |

Sites dial **{address}**. To add a hospital later, have it run `fedsynth-node keygen --out
KIT_DIR`, check the fingerprint it prints with them by phone, and run `fedsynth-coordinator
provision --site NEWSITE=/path/to/its/node-auth.pub --out {out}`: this
CA, certificate and signing key are reused and only the new site's kit is written (it holds
no private key: the hospital keeps its own).

## 1. Start the SuperLink and the ServerApp

The SuperLink, which the hospitals' traffic reaches, runs no fedsynth code and never holds
the manifest-signing key (`--isolation process`); Flower's SuperExec runs fedsynth's
ServerApp, which signs the manifest, beside it. Each gets its own copies of the files it
needs, and the two share a secret. As root, once (the database folder must exist before the
SuperLink starts):

```
install -d -m 0700 {superlink} {serverapp} \\
    {DEPLOYED.superlink_state} {DEPLOYED.studies.parent} {DEPLOYED.studies}
install -m 0644 {q(kit.CA_CERT)} {q('superlink.pem')} {superlink}/
install -m 0600 {q('superlink.key')} {superlink}/
install -m 0644 {q(kit.CA_CERT)} {serverapp}/
install -m 0600 {q(SIGNING_KEY)} {serverapp}/
install -m 0644 {schema_source} {serverapp / kit.SCHEMA_COPY}
(umask 077; head -c 32 /dev/urandom > {secret})
```

Then the SuperLink, and the SuperExec in a second terminal (both stay in the foreground):

```
export {RUN_ENVIRONMENT}
flower-superlink \\
    --ssl-ca-certfile {superlink / kit.CA_CERT} \\
    --ssl-certfile {superlink / 'superlink.pem'} \\
    --ssl-keyfile {superlink / 'superlink.key'} \\
    --enable-supernode-auth \\
    --database {DEPLOYED.superlink_state / 'superlink-state.db'} \\
    --disable-runtime-dependency-installation \\
    --isolation process --superexec-auth-secret-file {secret} \\
    --host 127.0.0.1 --port {port}
```

```
export {RUN_ENVIRONMENT}
flower-superexec \\
    --runtime-api-address 127.0.0.1:{port} \\
    --root-certificates {serverapp / kit.CA_CERT} \\
    --superexec-auth-secret-file {secret}
```

`--database` keeps the enrolled nodes across restarts. As services, fedsynth's
`deploy/systemd/fedsynth-superlink.service` and `fedsynth-serverapp.service` run the same
commands on the same paths, as two users (only the ServerApp's can read
`{SIGNING_KEY}`); `deploy/README.md` §2 also shows the containers. This one port carries
three APIs: `/v1/fleet/` (what hospitals dial), `/v1/control/` (the `flwr` CLI: it launches
studies and enrols nodes, and is **unauthenticated**) and `/v1/runtime/` (the SuperExec,
with the shared secret). `/v1/control/` and `/v1/runtime/` must never be reachable from
outside, so the SuperLink listens on 127.0.0.1 only. {_public_entry(address)}
Hospitals need no inbound port.

## 2. Tell the `flwr` CLI about the consortium

In `$FLWR_HOME/config.toml` (default `~/.flwr/config.toml`):

```
[superlink]
default = "{FEDERATION}"

[superlink.{FEDERATION}]
address = "{local}"
root-certificates = "{d / kit.CA_CERT}"
```

## 3. Enrol the sites (once per site; persists in the database)

```
{register}
fedsynth-coordinator sites --out {out} --control 127.0.0.1:{port}
```

`sites` lists each enrolled site by name with its key's fingerprint, its SuperLink node id
and status (`flwr supernode ls` shows neither names nor keys).

## 4. Launch a study

Once the sites' nodes run (no source checkout needed: it ships the installed release):

```
{study_command}
```

{secure_text}

The command prints the sha256 of the app bundle it ships (the one each site kit pins),
streams the study's log, and exits 0 only when `--out` then holds this run's complete
release, signed with this kit's key; otherwise 1, saying where to look. It fills the run
config from this kit (`superlink-address` {local}) and takes the ServerApp's own copies of
the CA and `{SIGNING_KEY}` from `--run-config`: paths are as the ServerApp's process sees
them. The other study settings (`epsilon`, `generator`, `rows`, …) are the
`[tool.flwr.app.config]` keys of fedsynth's `pyproject.toml` (the {DEFAULT_FAMILY} family by
default), which `--run-config 'KEY=VALUE …'` overrides. The cohort, its manifest and its
report land in `--out`.

## 5. Verify a released cohort

```
fedsynth-coordinator verify {study} --public-key {q(kit.MANIFEST_SIGNING_PUB)}
```

Exit 0 only when the manifest's signature is this consortium key's and every cohort file's
sha256 and size match; otherwise one line per problem. The sites run the same check with
`fedsynth-node verify DIR --kit KIT`.

## 6. Revoke a site, renew the certificate

```
fedsynth-coordinator revoke --site SITE --out {out} --control 127.0.0.1:{port}
fedsynth-coordinator renew-cert --out {out}
install -m 0644 {q('superlink.pem')} {superlink}/
install -m 0600 {q('superlink.key')} {superlink}/
```

`revoke` unregisters the site's key at the running SuperLink (`--control`: its loopback
address), moves `enrolled/SITE.pub` to `revoked/` and records the revocation in
`revocations.jsonl`; without `--control` it changes the files only, and the SuperLink still
accepts the key until you run it again with `--control`. `renew-cert` issues a new SuperLink
certificate under the same CA (it needs `ca.key`); install it where the SuperLink reads it
and restart the SuperLink to serve it. The site kits do not change.
"""


def _private_key_row(site: str, own_key: bool) -> str:
    if own_key:
        return (f"| `{kit.NODE_AUTH_KEY}` | **secret, not in this kit**: the private key you made "
                f"with `fedsynth-node keygen`. Put this kit's files in the folder that holds it "
                f"(or set `auth-private-key` in `{kit.NODE_TOML}`); it never leaves this "
                "machine, and the coordinator never had it |")
    return (f"| `{kit.NODE_AUTH_KEY}` | **secret, DEMO ONLY**: the coordinator generated this key "
            f"for a loopback demo and so once held it. For a real site, make your own with "
            f"`fedsynth-node keygen --out NEW_KIT_DIR` and have the coordinator enrol its "
            f"`{kit.NODE_AUTH_PUB}` instead |")


def _secure_aggregation(n_sites: int) -> tuple[str, str]:
    """The run config's SecAgg+ keys for `n_sites` sites, as `demo` and `simulate` choose
    them, and a paragraph on what they mean and how to change them."""
    plan, _ = default_plan(n_sites)
    if not plan.secure_aggregation:
        return "", (
            f"With {n_sites} site(s) SecAgg+ stays off: with 2, each site could subtract its "
            "own update from the sum and read the other's, so it would protect nothing "
            f"against the other site. From {SECURE_AGGREGATION_MIN_SITES} sites, add "
            "`secure-aggregation=true min-sites=N colluders=1` (N: the number of sites) to "
            "have the coordinator see only the sum of the sites' updates.")
    return f" {secure_run_config(plan)}", (
        "`secure-aggregation=true` runs SecAgg+: the coordinator only ever holds the sum of "
        f"the sites' updates, never one hospital's. `min-sites={plan.min_sites}` puts every "
        "site in every secure sum, so a site that drops out stops the study before anything "
        f"is released; `colluders={plan.colluders}` assumes at most that many sites side "
        "with the coordinator (the marginals family's sites add shares of one central noise "
        "that the other sites' honest shares alone carry). To run without SecAgg+ (a "
        "consortium of 2 sites, where it protects nothing against the other site), replace "
        "those three keys with `secure-aggregation=false`.")


def _public_entry(address: SuperLinkAddress) -> str:
    if address.is_loopback:
        return ("This consortium's address is on this machine (a trial), so nodes here dial "
                "the SuperLink directly.")
    clash = (f" (both use port {address.port}: bind the proxy to the public IP, "
             f"`listen PUBLIC_IP:{address.port} ssl;`)"
             if address.port == SUPERLINK_LOCAL_PORT else "")
    return (f"The public entry, {address}, is a reverse proxy on this machine that forwards "
            f"`/v1/fleet/` only to 127.0.0.1:{SUPERLINK_LOCAL_PORT}{clash}: see "
            "`deploy/reverse-proxy.md` and `deploy/nginx-superlink.conf` in the fedsynth "
            "repository.")


def site_readme(site: str, address: SuperLinkAddress, own_key: bool, app_sha256: str) -> str:
    """What hospital IT needs to know to run site `site`'s node; `own_key`: the site made
    its key pair itself (`fedsynth-node keygen`), so the kit holds no private key;
    `app_sha256`: the release's app bundle the kit pins."""
    return f"""\
# fedsynth node kit for site {site}

This folder is everything your node needs to join the consortium's studies.

| file | what it is |
|---|---|
| `{kit.NODE_TOML}` | this node's configuration (SuperLink address, paths, privacy budget) |
| `{kit.CA_CERT}` | the consortium CA: the node only talks to a SuperLink it certified |
{_private_key_row(site, own_key)}
| `{kit.NODE_AUTH_PUB}` | its public half, the key the coordinator enrolled for site {site} |
| `{kit.MANIFEST_SIGNING_PUB}` | the consortium's manifest-signing public key: `fedsynth-node verify` checks a released cohort against it |
| `{kit.SCHEMA_COPY}` | the consortium's data dictionary (if the coordinator included it) |

## Start the node

```
fedsynth-node check --schema {kit.SCHEMA_COPY} --data /path/to/records.csv   # optional: validate first
fedsynth-node start --kit . --data /path/to/records.csv
```

`start` checks the kit and every record before it connects; add `--dry-run` to see
the exact `flower-supernode` command without running it. Patient records never
leave this machine: only model updates, trained with differential privacy, do.

**What you trust.** As in any Flower deployment, the node runs the fedsynth app
code the coordinator sends with each study (Flower installs it for the run). The
ledger, the budget check and the reply whitelist are in that code: agree with the
consortium on the fedsynth release, and run studies only from a coordinator you
trust to ship it unchanged.

## See the privacy budget

```
fedsynth-node budget --kit .
```

It lists every study on this node's privacy ledger (`state/privacy-ledger.jsonl`) and
what is committed, spent and left of `epsilon-budget` and `delta-budget`. A study that
would overspend either is refused before any step. Whatever the reason the node declines,
the coordinator sees one fixed text; the reason is in this node's log. If the ledger's
hash chain is broken, or the ledger no longer holds the head kept outside it (below), it
exits 2 with a paragraph saying why, and the node refuses every study until you restore
the ledger from your backup.

## Check a released cohort

```
fedsynth-node verify /path/to/cohort-folder --kit .
```

It exits 0 only when the cohort's manifest is signed by the consortium's key in this kit
and every file it lists (`synthetic.csv`, `synthetic.parquet`) has the sha256 and size the
manifest states; otherwise it prints one line per file that differs. `report.html` is not
covered by the signature. With `--kit` it then compares what the manifest says about this
site (the rounds it is credited with, its epsilon, steps, delta and ledger head) with this
node's own ledger, and exits 1 naming each claim the ledger contradicts.

## Network

The node needs only **outbound TCP port {address.port} to {address.host}** (TLS).
It opens no inbound port: the node's local runtime port ({kit.DEFAULT_RUNTIME_PORT}) listens on
127.0.0.1 only.

## The `{kit.DEFAULT_STATE_DIR}/` folder

Created on first start, readable by the node's user only. It holds this site's
privacy ledger (the epsilon every study has spent, append-only and hash-chained; a
study that would exceed the budget in `{kit.NODE_TOML}` is refused) and study state. Back
it up and never delete it.

## What your security officer needs to know

**Only the agreed code runs.** `{kit.NODE_TOML}` pins the fedsynth release's app bundle
(`{kit.APP_SHA256}` = `{app_sha256}`). The node's SuperNode runs no study code itself;
fedsynth's executor beside it refuses any study whose bundle has another hash before a line
of it runs, and runs the ClientApp installed on this machine, never the bundle's. `start`
refuses a pin that is not the installed release's (`fedsynth-node app-hash` prints that).
The process that handles the coordinator's messages is sandboxed (Linux Landlock, 5.13+):
it cannot read `{kit.NODE_AUTH_KEY}`. deploy/README.md in the fedsynth sources has the whole
page for security officers.

**The ledger cannot be rolled back unnoticed.** The hash chain catches an entry edited or
removed from the middle. A ledger cut short, deleted, or rewritten with a recomputed chain
is caught by its *head*, the hash of its last entry, kept in two places the state folder
does not reach: the file `{kit.DEFAULT_LEDGER_HEAD}` in this kit folder (or where
`{kit.LEDGER_HEAD}` in `{kit.NODE_TOML}` / `start --ledger-head` puts it; the node rewrites
it after every entry, and refuses to start if it cannot), and the consortium's signed
manifests, which record each site's head; at the next study the coordinator presents the
last one it saw. A ledger that lost the head kept in the file is refused before anything
runs (`start` and `budget` exit 2, every study is declined), and one that lost the head the
coordinator presents is declined at that study; each time a paragraph says why. Restore the
ledger from a backup that holds that entry; never start a new, empty one, which would
spend earlier studies' epsilon again. A head is not secret: a coordinator that presents a
false one can only make the node decline. Back up the head file with the state folder.

**Caps on any one study.** Besides the lifetime budget, `{kit.NODE_TOML}` can cap what one
study asks (`[{kit.MAX_EPSILON.section}]`, shown there as comments with the defaults):
`{kit.MAX_EPSILON.key}` ({kit.CAP_DEFAULTS[kit.MAX_EPSILON]:g}), `{kit.MAX_DELTA.key}`
({kit.CAP_DEFAULTS[kit.MAX_DELTA]:g}), `{kit.MAX_TOTAL_STEPS.key}` (rounds x local
steps, {kit.CAP_DEFAULTS[kit.MAX_TOTAL_STEPS]}), `{kit.MAX_MODEL_PARAMETERS.key}` (the values
of the model the study makes this node hold, {kit.CAP_DEFAULTS[kit.MAX_MODEL_PARAMETERS]}) and
`{kit.MAX_ROWS_TO_SCORE.key}` (a cohort's rows in a federated evaluation,
{kit.CAP_DEFAULTS[kit.MAX_ROWS_TO_SCORE]}). They are checked on the plan before the ledger is
touched and before any weight is allocated (the model is counted, not built); a refusal in
the node's log names the cap, the plan's value and the key to change. Restart the node after
changing them.
"""
