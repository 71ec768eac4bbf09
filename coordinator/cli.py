"""The coordinator's own commands: provision a consortium, evaluate and verify cohorts.

`provision` writes the consortium CA, the SuperLink certificate, the
manifest-signing key and one kit per hospital, enrolling the public key each hospital
made itself (`--site NAME=PATH.pub`; `--sites` generates the keys here, for a loopback
demo only). `sites` lists the enrolled sites by name as the running SuperLink sees them
(node id, status). `revoke` removes a site from the enrolled set (and, with `--control`,
from the running SuperLink); `renew-cert` renews the SuperLink certificate under the same
CA. `evaluate` scores a cohort
against real records. `verify DIR [--public-key PUB]` checks a released cohort
folder: the manifest's signature (against PUB when given) and the sha256 and
size of every file it lists; it exits 0 only when all match, 1 naming each file
that does not, 3 when no trusted key was given (the signer is then not pinned).

The `fedsynth-coordinator` command is these plus `demo` and `simulate`, which
play both sides on one machine and so live in the `simulation` harness
(`simulation.cli`). User errors end with one paragraph on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from coordinator.provisioning.consortium import (DEFAULT_SUPERLINK, ProvisionRequest, Provisioned,
                                                 enrolled_keys, provision, read_consortium)
from coordinator.provisioning.renewal import renew_certificate
from coordinator.provisioning.revocation import Revocation, revoke
from coordinator.provisioning.superlink_enrolment import Registration, site_registrations
from protocols.kit_layout import COORDINATOR_KIT, KitError, parse_address
from protocols.errors import FedsynthError
from protocols.evaluation.report.files import evaluate_files, score_lines
from protocols.release.signing import key_fingerprint, parse_public_key
from protocols.release.verification import load_trusted_key, verify_release

PROG = "fedsynth-coordinator"


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `evaluate`, `provision`, `sites`, `revoke`, `renew-cert` and `verify` to a
    command's subparsers."""
    _evaluate_parser(sub)
    _provision_parser(sub)
    _sites_parser(sub)
    _revoke_parser(sub)
    _renew_parser(sub)
    _verify_parser(sub)


def run(args: argparse.Namespace) -> int:
    """Run one of the commands of `add_commands`."""
    commands = {"evaluate": _evaluate, "provision": _provision, "sites": _sites,
                "revoke": _revoke, "renew-cert": _renew, "verify": _verify}
    return commands[args.command](args)


def run_reporting_errors(command: Callable[[], int], interrupted: str = "interrupted.") -> int:
    """`command()`'s exit status; a user error as one paragraph on stderr and status 2,
    an interruption as `interrupted` and status 130."""
    try:
        return command()
    except FedsynthError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: {interrupted}", file=sys.stderr)
        return 130


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="score a synthetic cohort against real records")
    ev.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    ev.add_argument("--real", type=Path, action="append", required=True,
                    help="real records the cohort was trained on; repeat to pool several files")
    ev.add_argument("--synthetic", type=Path, required=True, help="the cohort (CSV or Parquet)")
    ev.add_argument("--holdout", type=Path, action="append", default=[],
                    help="real records NOT used in training (enables DCR and membership "
                         "inference); repeatable")
    ev.add_argument("--manifest", type=Path,
                    help="the cohort's manifest (default: manifest.json beside the cohort)")
    ev.add_argument("--out", type=Path, required=True,
                    help="report.html to write (report.json is written beside it)")


def _evaluate(args: argparse.Namespace) -> int:
    report = evaluate_files(args.schema, args.real, args.synthetic, args.out,
                            holdout_paths=args.holdout, manifest_path=args.manifest)
    print(score_lines(report, args.out))
    return 0


def _provision_parser(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("provision", help="create the consortium CA, the SuperLink certificate "
                        "and one deployment kit per hospital, enrolling each hospital's own "
                        "public key (run again to add hospitals)")
    who = pr.add_mutually_exclusive_group(required=True)
    who.add_argument("--site", action="append", metavar="NAME=PATH.pub", default=[],
                     help="a hospital and the node-auth.pub it made with `fedsynth-node "
                          "keygen`; repeat for each. Its private key never comes here")
    who.add_argument("--sites", help="DEMO ONLY (loopback, one machine): comma-separated site "
                     "names whose key pairs the coordinator generates, putting each private "
                     "key in that site's kit; never for real hospitals")
    pr.add_argument("--out", type=Path, required=True, help="the kits folder (e.g. kits/)")
    pr.add_argument("--superlink", help="HOST:PORT the hospitals' nodes dial "
                    f"(default {DEFAULT_SUPERLINK}; an existing consortium keeps its own)")
    pr.add_argument("--schema", type=Path, help="the consortium schema, copied into each kit")
    pr.add_argument("--epsilon-budget", type=float, default=10.0,
                    help="total epsilon each new site will spend across all studies (default 10)")
    pr.add_argument("--delta-budget", type=float, default=1e-4,
                    help="total delta each new site allows across all studies; studies' deltas "
                         "add up like their epsilons (default 1e-4: ten studies at 1e-5)")
    pr.add_argument("--valid-days", type=int, default=365,
                    help="how long the SuperLink certificate stays valid (default 365; "
                         "`renew-cert` renews it under the same CA)")
    pr.add_argument("--ca-valid-days", type=int, default=3650,
                    help="how long the consortium CA stays valid (default 3650); when it "
                         "expires, every site needs a new kit")


def _provision(args: argparse.Namespace) -> int:
    sites = tuple(s.strip() for s in args.sites.split(",")) if args.sites else ()
    request = ProvisionRequest(out=args.out, sites=sites,
                               site_keys=tuple(_site_key(v) for v in args.site),
                               superlink=args.superlink, schema=args.schema,
                               epsilon_budget=args.epsilon_budget,
                               delta_budget=args.delta_budget, valid_days=args.valid_days,
                               ca_valid_days=args.ca_valid_days)
    _report_provisioned(provision(request))
    return 0


def _site_key(value: str) -> tuple[str, Path]:
    name, separator, path = value.partition("=")
    if not separator or not name.strip() or not path.strip():
        raise KitError(f"--site {value!r} is not NAME=PATH.pub: give the site's name, '=', and "
                       "the public key file it sent (e.g. --site siteA=keys/siteA.pub).")
    return name.strip(), Path(path.strip()).expanduser()


def _sites_parser(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("sites", help="list the enrolled sites by name as the running "
                        "SuperLink sees them (key fingerprint, node id, status)")
    st.add_argument("--out", type=Path, required=True,
                    help="the kits folder `provision` wrote (holds coordinator/)")
    st.add_argument("--control", metavar="HOST:PORT", required=True,
                    help="the running SuperLink's loopback address (e.g. 127.0.0.1:9092)")


def _sites(args: argparse.Namespace) -> int:
    coordinator_dir = args.out / COORDINATOR_KIT
    enrolled = enrolled_keys(coordinator_dir)
    rows = site_registrations(parse_address(args.control),
                              read_consortium(coordinator_dir).ca_pem, enrolled)
    print(_registrations_table(rows))
    return 0


def _registrations_table(rows: list[Registration]) -> str:
    cells = [("site", "node-auth key", "SuperLink node", "status")] + [
        (row.site or "NOT ENROLLED", row.fingerprint,
         "-" if row.node_id is None else str(row.node_id), row.status) for row in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cell, widths)) + "  " + cell[3]
                     for cell in cells)


def _revoke_parser(sub: argparse._SubParsersAction) -> None:
    rv = sub.add_parser("revoke", help="remove a site from the enrolled set and record the "
                        "revocation; with --control, also at the running SuperLink")
    rv.add_argument("--site", required=True, help="the site to revoke")
    rv.add_argument("--out", type=Path, required=True,
                    help="the kits folder `provision` wrote (holds coordinator/)")
    rv.add_argument("--control", metavar="HOST:PORT",
                    help="the running SuperLink's loopback address (e.g. 127.0.0.1:9092): "
                         "unregister the site's key there too, so that it is refused")


def _revoke(args: argparse.Namespace) -> int:
    control = parse_address(args.control) if args.control else None
    _report_revoked(revoke(args.out, args.site, control), args)
    return 0


def _renew_parser(sub: argparse._SubParsersAction) -> None:
    rn = sub.add_parser("renew-cert", help="issue a new SuperLink certificate under the same "
                        "CA; site kits stay as they are")
    rn.add_argument("--out", type=Path, required=True,
                    help="the kits folder `provision` wrote (holds coordinator/)")
    rn.add_argument("--valid-days", type=int, default=365,
                    help="how long the new certificate stays valid (default 365; never "
                         "beyond the CA's expiry)")


def _renew(args: argparse.Namespace) -> int:
    done = renew_certificate(args.out, args.valid_days)
    print(f"New SuperLink certificate {done.certificate}, valid from "
          f"{done.valid_from:%Y-%m-%d} until {done.valid_until:%Y-%m-%d}, signed by the same "
          "consortium CA: no site kit changes. Restart the SuperLink to serve it.")
    if done.capped_by_ca:
        print(f"It ends early, with the CA itself ({done.ca_valid_until:%Y-%m-%d}); after that "
              "every site needs a new kit from a new consortium CA.")
    return 0


def _verify_parser(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser("verify", help="check a released cohort: the manifest's signature "
                            "and the sha256 of every file it lists")
    verify.add_argument("directory", type=Path, metavar="DIR",
                        help="the folder holding the cohort and its manifest.json")
    verify.add_argument("--public-key", type=Path,
                        help="the manifest-signing public key to trust (e.g. "
                             "kits/coordinator/manifest-signing.pub)")


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when signature and files all match a trusted key, 1 (one line per problem)
    otherwise, 3 when they match a key nobody said to trust (`ReleaseCheck.exit_status`)."""
    trusted = load_trusted_key(args.public_key) if args.public_key else None
    check = verify_release(args.directory, trusted)
    if not check.ok:
        print(f"{PROG}: {check.problem_report()}", file=sys.stderr)
        return 1
    print(check.summary())
    return check.exit_status


def _report_provisioned(done: Provisioned) -> None:
    coordinator = done.out / "coordinator"
    verb = "added to the existing consortium" if done.reused else "provisioned"
    print(f"{len(done.new_sites)} site kit(s) {verb}: "
          + ", ".join(str(done.out / s) for s in done.new_sites))
    for site, key in zip(done.new_sites, done.enrolled):
        print(f"Enrolled {site}: node-auth key {key.fingerprint}"
              + ("" if done.generated_keys else "; confirm it with the site by phone"))
    print(f"SuperLink address: {done.consortium.address}; its certificate is valid until "
          f"{done.consortium.valid_until:%Y-%m-%d} (`renew-cert` renews it), the consortium CA "
          f"until {done.consortium.ca_valid_until:%Y-%m-%d}.")
    print(f"Coordinator kit (keep it here, never ship it): {coordinator}; next steps in "
          f"{coordinator / 'README.md'}.")
    signer = parse_public_key(done.consortium.signing_pub, "manifest-signing.pub")
    print(f"Manifest-signing key fingerprint: {key_fingerprint(signer)}; publish it, so that "
          "anyone given a cohort can check who signed it (`verify`).")
    if done.generated_keys:
        print("DEMO ONLY: these sites' private keys were generated here and sit in their kits, "
              "so this machine held them. For real hospitals, each runs `fedsynth-node keygen` "
              "and you enrol its public key with --site NAME=PATH.pub.")
    else:
        print("No site private key was made or kept here. Send each hospital its kit folder; "
              "it goes beside the node-auth.key the hospital made.")


def _report_revoked(done: Revocation, args: argparse.Namespace) -> None:
    if not done.already_revoked:
        print(f"Revoked site {done.site} (node-auth key {done.key.fingerprint}): its key left "
              f"the enrolled set, recorded in {done.record}.")
    if done.unregistered_nodes is None:
        print(f"The running SuperLink still accepts this key (it keeps registrations in its "
              f"database) until you run: fedsynth-coordinator revoke --site {done.site} --out "
              f"{args.out} --control 127.0.0.1:PORT")
    elif done.unregistered_nodes:
        print(f"Unregistered at the SuperLink {args.control}: node(s) "
              f"{', '.join(map(str, done.unregistered_nodes))}; it refuses this key from now on.")
    else:
        print(f"The SuperLink at {args.control} had no registration with this key; it refuses it.")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
