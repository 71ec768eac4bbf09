"""`fedsynth-coordinator`: the coordinator's commands, and the two that play both sides.

`demo` runs the built-in multi-site registry through a whole federated DP
study; `simulate` runs one on your own files, one per site. Both run the
coordinator's ServerApp and the hospitals' ClientApp together in Flower's
simulation engine (`simulation.engine`), so they live in this harness, the one
package allowed to import both sides. `provision`, `evaluate` and `verify` are
the coordinator's own (`coordinator.cli`), and so is `study`, which runs a study on the
consortium's SuperLink (`coordinator.study_command`).

What the user leaves out of the plan `demo` and `simulate` take from
`protocols.plan_defaults`, for the study's number of sites: the marginals family
with its rounds, and SecAgg+ from three sites over every site with one colluder
assumed; the progress output says which SecAgg+ setting was chosen and why.

`demo` and `simulate` sign the cohort's manifest with `--signing-key` (the
coordinator kit's manifest-signing.key) or, without it, with this user's own
key, generated once at $XDG_CONFIG_HOME/fedsynth/manifest-signing.key (default
~/.config/fedsynth/); the summary prints the key's fingerprint. User errors
(bad schema, bad records, bad plan, bad key) end with one paragraph on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coordinator import cli as coordinator_cli
from coordinator import study_command
from protocols.generators import FAMILIES
from protocols.plan import StudyPlan
from protocols.plan_defaults import (DEFAULT_COLLUDERS, DEFAULT_FAMILY,
                                     SECURE_AGGREGATION_MIN_SITES, default_plan)
from protocols.release.manifest import Release
from simulation import local_run
from simulation.demo import DEMO_SITES, run_demo
from simulation.engine import simulate_study

DEFAULT_PLAN = StudyPlan()
# The demo shows a federated evaluation: it spends this much of the study's epsilon.
DEMO_EVALUATION_EPSILON = 0.5


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    coordinator_cli.configure_logging(getattr(args, "verbose", False))
    if args.command == "local-run":
        return coordinator_cli.run_reporting_errors(lambda: local_run.run(args),
                                                    "interrupted; no cohort was released.")
    if args.command == "study":
        return coordinator_cli.run_reporting_errors(lambda: study_command.study_command(args),
                                                    study_command.INTERRUPTED)
    if args.command not in ("demo", "simulate"):
        return coordinator_cli.run_reporting_errors(lambda: coordinator_cli.run(args))
    return coordinator_cli.run_reporting_errors(lambda: _study(args),
                                                "interrupted; no cohort was released.")


def _study(args: argparse.Namespace) -> int:
    plan = _plan(args)
    if args.command == "demo":
        release = run_demo(args.out, plan, _progress, n_sites=DEMO_SITES,
                           signing_key_path=args.signing_key)
    else:
        release = simulate_study(args.schema, args.data, plan, args.out, _progress,
                                 signing_key_path=args.signing_key,
                                 train_on_synthetic=args.train_on_synthetic)
    _summarise(release)
    return 0


def _plan(args: argparse.Namespace) -> StudyPlan:
    """The plan the user asked for, with the defaults for this many sites
    (`protocols.plan_defaults`); each default worth knowing is said in one line."""
    n_sites = DEMO_SITES if args.command == "demo" else len(args.data)
    plan, notes = default_plan(n_sites, epsilon=args.epsilon, delta=args.delta,
                               rounds=args.rounds, rows=args.rows, seed=args.seed,
                               local_steps=args.local_steps, sample_rate=args.sample_rate,
                               min_sites=args.min_sites, generator=args.generator,
                               secure_aggregation=args.secure_aggregation,
                               colluders=args.colluders,
                               evaluation_epsilon=_evaluation_epsilon(args))
    for note in notes:
        _progress(note)
    return plan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=coordinator_cli.PROG,
                                     description=__doc__.split("\n")[0])
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
    coordinator_cli.add_commands(sub)
    local_run.add_command(sub)
    study_command.add_study_parser(sub)
    for p in (demo, sim):
        p.add_argument("--epsilon", type=float, help=f"per site, whole study; 'inf' = no DP "
                       f"(default {DEFAULT_PLAN.epsilon})")
        p.add_argument("--delta", type=float, help=f"per site (default {DEFAULT_PLAN.delta})")
        p.add_argument("--rounds", type=int, help="default: the generator's own ("
                       + ", ".join(f"{name} {family.default_rounds or DEFAULT_PLAN.rounds}"
                                   for name, family in FAMILIES.items()) + ")")
        p.add_argument("--local-steps", type=int,
                       help=f"vae: DP-SGD steps per round (default {DEFAULT_PLAN.local_steps})")
        p.add_argument("--sample-rate", type=float,
                       help="vae: each record is in a DP-SGD step's batch with this "
                            f"probability, at every site (default {DEFAULT_PLAN.sample_rate})")
        p.add_argument("--rows", type=int, help=f"cohort size (default {DEFAULT_PLAN.rows})")
        p.add_argument("--seed", type=int, help=f"default {DEFAULT_PLAN.seed}")
        p.add_argument("--min-sites", type=int,
                       help="sites every round needs; under SecAgg+ every secure sum holds at "
                            "least this many (default: every site under SecAgg+, so a site "
                            f"that drops out stops the study; else {DEFAULT_PLAN.min_sites})")
        p.add_argument("--evaluation-epsilon", type=float,
                       help="part of --epsilon each site spends, once, releasing noisy count "
                            "tables that score the cohort (federated evaluation); 0 = none "
                            f"(default: {DEMO_EVALUATION_EPSILON:g} for demo, 0 for simulate)")
        p.add_argument("--generator", choices=list(FAMILIES),
                       help="; ".join(f"{name}: {family.summary}"
                                      for name, family in FAMILIES.items())
                       + f" (default {DEFAULT_FAMILY})")
        p.add_argument("--secure-aggregation", action=argparse.BooleanOptionalAction,
                       help="combine the sites' updates with Flower's SecAgg+, so the "
                            "coordinator only ever holds their sum (default: on from "
                            f"{SECURE_AGGREGATION_MIN_SITES} sites; with 2, each site could "
                            "subtract its own update from the sum and read the other's, so "
                            "SecAgg+ would protect nothing against the other site)")
        p.add_argument("--colluders", type=int,
                       help="under SecAgg+, how many sites may side with the coordinator "
                            f"(default {DEFAULT_COLLUDERS}, or 0 where min-sites leaves no "
                            "room for one); the marginals family's sites then add shares of "
                            "the noise that the honest ones alone make central")
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
