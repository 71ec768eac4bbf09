"""`fedsynth-node`: what a hospital's data steward runs.

`start` checks the site's deployment kit and records, then runs the Flower
SuperNode that dials the consortium's SuperLink (outbound only) and, beside it, the
node's own app executor, which runs only studies of the app bundle the kit pins, with
the ClientApp installed here (`node.app_executor`); `app-hash` prints the sha256 of the
app bundle this installation runs, the value a kit pins. `check`
validates a records file against the consortium's schema and prints a short
report; it exits 0 only when every row is valid. `evaluate` scores a
synthetic cohort against the site's own records and writes report.html (and
report.json) at the hospital; nothing leaves. `verify DIR --kit KIT` checks a
released cohort folder: the manifest's signature, against the consortium's key
in the site kit, and the sha256 and size of every file it lists; it exits 0
only when all match, 1 naming each file that does not, 3 when no trusted key
was given (the signer is then not pinned); with `--kit` it also checks what the
manifest says about this site (rounds, ε, steps, δ, ledger head) against the
site's own ledger, and the manifest's app hash against the kit's pinned `[app] sha256`,
and exits 1 naming each claim that disagrees. `budget` shows what
the site's privacy ledger has spent and committed, and what is left of its
budget; it exits 2 when the ledger's hash chain is broken or the ledger no
longer holds the head the node kept outside it (rolled back). `blend` measures, on
the site's own patients, how much of a released cohort to mix into its training
set, and writes blend.html and blend.json; nothing leaves. User errors end with
one paragraph on stderr and exit 2, never a traceback. `keygen --out DIR` makes the
site's node-auth key pair at the hospital: the private key stays here (mode 0600, never
overwritten), the public key and its fingerprint go to the coordinator.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from node.blend import add_blend_parser, blend_command
from node.keygen import write_node_auth_key_pair
from node.kit import NodeKit, check_app_pin, check_kit, prepare_state_dir, read_kit
from node.ledger.anchor import LedgerAnchor, check_anchor
from node.ledger.budget_report import read_budget, report_text
from node.ledger.manifest_claims import app_hash_problem, claim_problems
from node.ledger.privacy_ledger import PrivacyLedger
from node.sandbox import unavailable_reason
from node.superlink_preflight import SuperLinkUnreachable, check_enrolled
from node.supernode_launch import (EXECUTABLE, executor_argv, executor_secret, run_node,
                                   shell_command, starting_line, supernode_argv)
from protocols.errors import FedsynthError
from protocols.evaluation.report.files import evaluate_files, score_lines
from protocols.flower_environment import flower_executable
from protocols.kit_layout import MANIFEST_SIGNING_PUB, KitError
from protocols.records import check_file
from protocols.release.app_bundle import release_sha256
from protocols.release.manifest import MANIFEST_NAME
from protocols.release.provenance import synthetic_provenance
from protocols.release.verification import load_trusted_key, verify_release
from protocols.schema import load_schema



def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            report = evaluate_files(args.schema, [args.data], args.synthetic, args.out,
                                    holdout_paths=args.holdout)
            print(score_lines(report, args.out))
            return 0
        if args.command == "start":
            return _start(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "budget":
            return _budget(args)
        if args.command == "blend":
            return blend_command(args)
        if args.command == "keygen":
            return _keygen(args.out)
        if args.command == "app-hash":
            print(release_sha256())
            return 0
        return _check(args.schema, args.data)
    except FedsynthError as exc:
        print(f"fedsynth-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsynth-node: interrupted; nothing was written.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsynth-node", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _keygen_parser(sub)
    sub.add_parser("app-hash", help="print the sha256 of the app bundle this installation "
                   "runs (the fedsynth release); a kit's node.toml pins it as [app] sha256")
    _start_parser(sub)
    _verify_parser(sub)
    _budget_parser(sub)
    add_blend_parser(sub)
    check = sub.add_parser("check", help="validate a records file against the schema")
    check.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    check.add_argument("--data", type=Path, required=True, help="records, CSV or Parquet")
    ev = sub.add_parser("evaluate", help="score a synthetic cohort against this site's records")
    ev.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    ev.add_argument("--data", type=Path, required=True, help="this site's records")
    ev.add_argument("--synthetic", type=Path, required=True, help="the cohort (CSV or Parquet)")
    ev.add_argument("--holdout", type=Path, action="append", default=[],
                    help="site records NOT used in training (enables DCR and membership "
                         "inference)")
    ev.add_argument("--out", type=Path, required=True,
                    help="report.html to write (report.json is written beside it)")
    return parser


def _keygen_parser(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="make this site's node-auth key pair; send only the "
                            "public key to the coordinator")
    keygen.add_argument("--out", type=Path, required=True,
                        help="the folder for node-auth.key and node-auth.pub: this site's kit "
                             "folder (e.g. /etc/fedsynth/kit)")


def _keygen(out: Path) -> int:
    written = write_node_auth_key_pair(out.expanduser())
    print(f"Private key: {written.private_path} (mode 0600). It proves this node is your site: "
          "it never leaves this machine, and no one else needs it, the coordinator included.")
    print(f"Public key:  {written.public_path}")
    print(f"Fingerprint: {written.public.fingerprint}")
    print("Send the public key file to the consortium coordinator, and confirm the fingerprint "
          "with them by another channel (phone, video call): they enrol it with "
          f"`fedsynth-coordinator provision --site YOURSITE={written.public_path.name}`. Unpack "
          "the kit they send back into this folder, beside the key.")
    return 0


def _start_parser(sub: argparse._SubParsersAction) -> None:
    start = sub.add_parser("start", help="check the kit and records, then run this site's node "
                           "(a Flower SuperNode that only dials out)")
    start.add_argument("--kit", type=Path, required=True,
                       help="this site's kit folder (node.toml, ca.pem, node-auth.key)")
    start.add_argument("--data", type=Path,
                       help="the site's records, CSV or Parquet (overrides node.toml)")
    start.add_argument("--schema", type=Path, help="the consortium schema (overrides node.toml)")
    start.add_argument("--state-dir", type=Path,
                       help="where the privacy ledger and study state live (overrides node.toml)")
    start.add_argument("--ledger-head", type=Path,
                       help="where the node keeps its privacy ledger's latest hash, outside "
                            "the state folder (overrides node.toml; default: ledger-head in "
                            "the kit folder)")
    start.add_argument("--runtime-port", type=int,
                       help="the node's local runtime port (overrides node.toml; give each "
                            "node on one machine its own)")
    start.add_argument("--train-on-synthetic", action="store_true",
                       help="allow training on a fedsynth synthetic cohort as if it were this "
                            "site's records (refused otherwise); the cohort's manifest will "
                            "record that this site did")
    start.add_argument("--dry-run", action="store_true",
                       help="check everything and print the flower-supernode and app executor "
                            "commands; run nothing")


def _verify_parser(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser("verify", help="check a released cohort: the manifest's signature "
                            "and the sha256 of every file it lists")
    verify.add_argument("directory", type=Path, metavar="DIR",
                        help="the folder holding the cohort and its manifest.json")
    trusted = verify.add_mutually_exclusive_group()
    trusted.add_argument("--kit", type=Path, help="this site's kit folder: the manifest must be "
                         f"signed by the consortium key in its {MANIFEST_SIGNING_PUB}")
    trusted.add_argument("--public-key", type=Path,
                         help="the consortium's manifest-signing public key (PEM) to trust")
    verify.add_argument("--state-dir", type=Path, help="with --kit: the node's state folder, "
                        "where its ledger is, when the node runs with `start --state-dir` "
                        "(overrides node.toml)")


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when signature and files all match a trusted key, 1 (one line per problem)
    otherwise, 3 when they match a key nobody said to trust (`ReleaseCheck.exit_status`)."""
    if args.state_dir is not None and args.kit is None:
        raise FedsynthError("--state-dir names the ledger a manifest is compared with; it "
                            "goes with --kit.")
    key_path = args.kit / MANIFEST_SIGNING_PUB if args.kit else args.public_key
    check = verify_release(args.directory, load_trusted_key(key_path) if key_path else None)
    if not check.ok:
        print(f"fedsynth-node: {check.problem_report()}", file=sys.stderr)
        return 1
    print(check.summary())
    if args.kit:
        kit = read_kit(args.kit)
        if args.state_dir is not None:
            kit = dataclasses.replace(kit, state_dir=args.state_dir.expanduser().resolve())
        return _verify_site_claims(args.directory / MANIFEST_NAME, kit)
    return check.exit_status


def _verify_site_claims(manifest_path: Path, kit: NodeKit) -> int:
    """Exit 0 when the (verified) manifest's app bundle is the kit's pinned one and what it
    says about this site matches its ledger; 1 naming what does not."""
    ledger = PrivacyLedger(kit.state_dir)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    other_app = app_hash_problem(manifest, kit.app_sha256, kit.directory)
    if other_app:
        print(f"fedsynth-node: {other_app}.", file=sys.stderr)
        return 1
    problems, compared = claim_problems(manifest, kit.site, ledger.entries(), ledger.path)
    if problems:
        print(f"fedsynth-node: what the manifest says about site {kit.site} disagrees with "
              "its own ledger: " + "; ".join(problems) + ". The cohort's privacy statement "
              "for this site is not what the site recorded; ask the coordinator why.",
              file=sys.stderr)
        return 1
    print(compared)
    return 0


def _budget_parser(sub: argparse._SubParsersAction) -> None:
    budget = sub.add_parser("budget", help="what the site's privacy ledger has spent and what "
                            "is left of its budget")
    budget.add_argument("--kit", type=Path, help="this site's kit folder (its node.toml names "
                        "the state folder and the epsilon budget)")
    budget.add_argument("--state-dir", type=Path, help="the node's state folder (overrides "
                        "node.toml)")
    budget.add_argument("--epsilon-budget", type=float,
                        help="the site's total epsilon over all studies (overrides node.toml)")
    budget.add_argument("--delta-budget", type=float,
                        help="the site's total delta over all studies (overrides node.toml; "
                             "default without a kit: 1, no limit)")
    budget.add_argument("--ledger-head", type=Path, help="the node's ledger head file "
                        "(overrides node.toml; default with a kit: ledger-head in the kit)")
    budget.add_argument("--json", action="store_true", help="print the report as JSON")


def _budget(args: argparse.Namespace) -> int:
    """Exit 0 with the report; 2 when the ledger's chain is broken (it is shown up to
    the break) or the ledger lost the head kept in the kit's head file: the node refuses
    to train on either until an operator acts."""
    kit = read_kit(args.kit) if args.kit else None
    state_dir = args.state_dir or (kit.state_dir if kit else None)
    epsilon_budget = args.epsilon_budget if args.epsilon_budget is not None else (
        kit.epsilon_budget if kit else None)
    if state_dir is None or epsilon_budget is None:
        raise FedsynthError("fedsynth-node budget needs --kit KIT, or both --state-dir and "
                            "--epsilon-budget.")
    delta_budget = args.delta_budget if args.delta_budget is not None else (
        kit.delta_budget if kit else 1.0)
    head_file = args.ledger_head or (kit.ledger_head_file if kit else None)
    report = read_budget(state_dir, epsilon_budget, delta_budget, head_file)
    print(json.dumps(report.to_json(), indent=2) if args.json else report_text(report))
    if not report.trusted:
        print(f"fedsynth-node: error: {report.problem or report.rolled_back}", file=sys.stderr)
        return 2
    return 0


def _start(args: argparse.Namespace) -> int:
    kit = _with_overrides(read_kit(args.kit), args)
    n_records = check_kit(kit)
    check_app_pin(kit)
    sandbox_problem = unavailable_reason()
    if sandbox_problem:
        raise KitError(f"The node cannot start: {sandbox_problem}. The app process that "
                       "handles the coordinator's messages must be unable to read this "
                       "site's node-auth key; run the node on such a kernel (the container "
                       "and the service do not change this).")
    supernode = flower_executable(EXECUTABLE)
    if args.dry_run:
        placeholder = Path("$SUPEREXEC_SECRET")
        print(shell_command(supernode_argv(kit, supernode, placeholder)))
        print(shell_command(executor_argv(kit, placeholder)))
        return 0
    prepare_state_dir(kit)
    ledger = PrivacyLedger(kit.state_dir)
    # A ledger rolled back is refused here, before the node connects to anyone.
    check_anchor(ledger.entries(), LedgerAnchor(kit.ledger_head_file), ledger.path)
    try:
        # A key the SuperLink does not hold is told here, with its fingerprint, not as
        # Flower's "could not establish a connection".
        check_enrolled(kit)
    except SuperLinkUnreachable as exc:
        # A node that boots before the SuperLink keeps trying (Flower retries); exit 2
        # would stop a service for good.
        print(f"fedsynth-node: warning: {exc} Starting anyway: the node keeps trying to "
              "connect.", file=sys.stderr, flush=True)
    print(starting_line(kit, n_records), flush=True)
    with executor_secret() as secret:
        return run_node({"supernode": supernode_argv(kit, supernode, secret),
                         "app executor": executor_argv(kit, secret)})


def _with_overrides(kit: NodeKit, args: argparse.Namespace) -> NodeKit:
    """Command-line paths are relative to the working directory, node.toml's to the kit."""
    overrides = {name: path.expanduser().resolve() for name, path in
                 (("records", args.data), ("schema", args.schema), ("state_dir", args.state_dir),
                  ("ledger_head", args.ledger_head))
                 if path is not None}
    if args.train_on_synthetic:
        overrides["train_on_synthetic"] = True
    if args.runtime_port is not None:
        if not 1 <= args.runtime_port <= 65535:
            raise FedsynthError(f"--runtime-port {args.runtime_port} is outside 1-65535.")
        overrides["runtime_port"] = args.runtime_port
    return dataclasses.replace(kit, **overrides)


def _check(schema_path: Path, data_path: Path) -> int:
    schema = load_schema(schema_path)
    validation = check_file(data_path, schema)
    synthetic = _synthetic_note(data_path)
    if synthetic:
        print(synthetic)
    if not validation.ok:
        print(f"fedsynth-node: {validation.summary()}", file=sys.stderr)
        return 1
    print(f"{data_path}: {validation.n_rows} rows, {len(schema.features)} modelled columns, "
          f"all valid against schema '{schema.name}' (sha256 {schema.sha256[:12]}…).")
    return 0


def _synthetic_note(data_path: Path) -> str | None:
    """Say plainly when a file is a fedsynth cohort rather than real records."""
    provenance = synthetic_provenance(data_path)
    if provenance is None:
        return None
    return (f"note: {data_path} is a SYNTHETIC fedsynth cohort ({provenance}), "
            "not real patient records.")


if __name__ == "__main__":
    sys.exit(main())
