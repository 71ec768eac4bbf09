"""`fedsynth-coordinator`: provision a consortium, run a study, evaluate and verify cohorts.

`demo` and `simulate` sign the cohort's manifest with `--signing-key` (the
coordinator kit's manifest-signing.key) or, without it, with this user's own
key, generated once at $XDG_CONFIG_HOME/fedsynth/manifest-signing.key (default
~/.config/fedsynth/); the summary prints the key's fingerprint. `verify DIR
[--public-key PUB]` checks a released cohort folder: the manifest's signature
(against PUB when given) and the sha256 and size of every file it lists; it
exits 0 only when all match, 1 naming each file that does not, 3 when no
trusted key was given (the signer is then not pinned).

User errors (bad schema, bad records, bad plan, bad key) end with one paragraph
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from coordinator.cohort import Release
from coordinator.demo import run_demo
from coordinator.provisioning import DEFAULT_SUPERLINK, ProvisionRequest, Provisioned, provision
from coordinator.simulation import simulate_study
from protocols.cohort_evaluation import evaluate_files, score_lines
from protocols.errors import FedsynthError
from protocols.manifest_signing import key_fingerprint, parse_public_key
from protocols.plan import GENERATORS, StudyPlan
from protocols.release_verification import load_trusted_key, verify_release

DEFAULT_PLAN = StudyPlan()
# The demo shows a federated evaluation: it spends this much of the study's epsilon.
DEMO_EVALUATION_EPSILON = 0.5



def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "provision":
            return _provision(args)
        if args.command == "verify":
            return _verify(args)
        plan = DEFAULT_PLAN.with_overrides(epsilon=args.epsilon, delta=args.delta,
                                        rounds=_rounds(args), rows=args.rows, seed=args.seed,
                                        local_steps=args.local_steps,
                                        sample_rate=args.sample_rate, min_sites=args.min_sites,
                                        generator=args.generator,
                                        secure_aggregation=args.secure_aggregation or None,
                                        evaluation_epsilon=_evaluation_epsilon(args))
        if args.command == "demo":
            release = run_demo(args.out, plan, _progress, signing_key_path=args.signing_key)
        else:
            release = simulate_study(args.schema, args.data, plan, args.out, _progress,
                                     signing_key_path=args.signing_key,
                                     train_on_synthetic=args.train_on_synthetic)
    except FedsynthError as exc:
        print(f"fedsynth-coordinator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsynth-coordinator: interrupted; no cohort was released.", file=sys.stderr)
        return 130
    _summarise(release)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsynth-coordinator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="built-in multi-site registry, full federated DP study")
    demo.add_argument("--out", type=Path, default=Path("fedsynth-demo"))
    sim = sub.add_parser("simulate", help="a study on your own CSV/Parquet files, one per site")
    sim.add_argument("--schema", type=Path, required=True, help="the consortium schema (YAML)")
    sim.add_argument("--data", type=Path, action="append", required=True,
                     help="one site's records; repeat once per site")
    sim.add_argument("--out", type=Path, required=True)
    sim.add_argument("--train-on-synthetic", action="store_true",
                     help="allow a fedsynth synthetic cohort among the site files (refused "
                          "otherwise); the new manifest names the sites that trained on one")
    _evaluate_parser(sub)
    _provision_parser(sub)
    _verify_parser(sub)
    for p in (demo, sim):
        p.add_argument("--epsilon", type=float, help=f"per site, whole study; 'inf' = no DP "
                       f"(default {DEFAULT_PLAN.epsilon})")
        p.add_argument("--delta", type=float, help=f"per site (default {DEFAULT_PLAN.delta})")
        p.add_argument("--rounds", type=int, help=f"default {DEFAULT_PLAN.rounds}")
        p.add_argument("--local-steps", type=int, help=f"default {DEFAULT_PLAN.local_steps}")
        p.add_argument("--sample-rate", type=float,
                       help="DP-SGD: each record is in a step's batch with this probability, "
                            f"at every site (default {DEFAULT_PLAN.sample_rate})")
        p.add_argument("--rows", type=int, help=f"cohort size (default {DEFAULT_PLAN.rows})")
        p.add_argument("--seed", type=int, help=f"default {DEFAULT_PLAN.seed}")
        p.add_argument("--min-sites", type=int, help=f"default {DEFAULT_PLAN.min_sites}")
        p.add_argument("--evaluation-epsilon", type=float,
                       help="part of --epsilon each site spends, once, releasing noisy count "
                            "tables that score the cohort (federated evaluation); 0 = none "
                            f"(default: {DEMO_EVALUATION_EPSILON:g} for demo, 0 for simulate)")
        p.add_argument("--generator", choices=GENERATORS,
                       help="vae: DP-SGD on a small VAE over many rounds (default); marginals: "
                            "each site releases noisy column, then pair tables (2 rounds)")
        p.add_argument("--secure-aggregation", action="store_true",
                       help="combine the sites' updates with Flower's SecAgg+, so the "
                            "coordinator only ever holds their sum")
        p.add_argument("--signing-key", type=Path,
                       help="the Ed25519 key that signs the manifest (a coordinator kit's "
                            "manifest-signing.key); default: this user's own key, made once "
                            "at $XDG_CONFIG_HOME/fedsynth/manifest-signing.key")
        p.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    return parser


def _evaluation_epsilon(args: argparse.Namespace) -> float | None:
    if args.evaluation_epsilon is None and args.command == "demo":
        return DEMO_EVALUATION_EPSILON
    return args.evaluation_epsilon


def _rounds(args: argparse.Namespace) -> int | None:
    """The marginals generator releases in two stages: two rounds unless the user says so."""
    return 2 if args.rounds is None and args.generator == "marginals" else args.rounds


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
                        "and one deployment kit per hospital (run again to add hospitals)")
    pr.add_argument("--sites", required=True,
                    help="comma-separated site names, e.g. siteA,siteB,siteC")
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
                    help="how long the CA and SuperLink certificate stay valid (default 365)")


def _provision(args: argparse.Namespace) -> int:
    request = ProvisionRequest(sites=tuple(s.strip() for s in args.sites.split(",")),
                               out=args.out, superlink=args.superlink, schema=args.schema,
                               epsilon_budget=args.epsilon_budget,
                               delta_budget=args.delta_budget, valid_days=args.valid_days)
    _report_provisioned(provision(request))
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
        print(f"fedsynth-coordinator: {check.problem_report()}", file=sys.stderr)
        return 1
    print(check.summary())
    return check.exit_status


def _report_provisioned(done: Provisioned) -> None:
    coordinator = done.out / "coordinator"
    verb = "added to the existing consortium" if done.reused else "provisioned"
    print(f"{len(done.new_sites)} site kit(s) {verb}: "
          + ", ".join(str(done.out / s) for s in done.new_sites))
    print(f"SuperLink address: {done.consortium.address}; certificates valid until "
          f"{done.consortium.valid_until:%Y-%m-%d}.")
    print(f"Coordinator kit (keep it here, never ship it): {coordinator}; next steps in "
          f"{coordinator / 'README.md'}.")
    signer = parse_public_key(done.consortium.signing_pub, "manifest-signing.pub")
    print(f"Manifest-signing key fingerprint: {key_fingerprint(signer)}; publish it, so that "
          "anyone given a cohort can check who signed it (`verify`).")
    print("Hand each hospital its own kit folder only, then delete your copies of the site "
          "kits: a site's node-auth.key proves that site's identity.")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)


def _progress(line: str) -> None:
    print(line, flush=True)


def _summarise(release: Release) -> None:
    privacy = release.manifest["privacy"]
    print(f"cohort: {release.directory / 'synthetic.csv'} ({release.manifest['rows']} rows), "
          f"manifest: {release.directory / 'manifest.json'}, signed by key "
          f"{release.manifest['signature']['key_fingerprint']} (check it with "
          f"`fedsynth-coordinator verify {release.directory}`)")
    if not privacy["private"]:
        print("privacy: NONE — trained without differential privacy; do not share this cohort.")
        return
    print(f"privacy: {privacy['statement']}")
    for name, site in privacy["sites"].items():
        print(f"  {name}: epsilon spent in training {site['epsilon_spent']:.4f} "
              f"(target {privacy['epsilon_target_per_site']:g}), delta {site['delta']:g}")
    if privacy.get("evaluation_epsilon"):
        print(f"  each site's evaluation release (epsilon {privacy['evaluation_epsilon']:g} on "
              "its own) composes with training within the target")


if __name__ == "__main__":
    sys.exit(main())
