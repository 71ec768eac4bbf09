"""Privacy–utility benchmark (issues 3 and 15): how good is a fedsynth cohort, and at what ε?

    python benchmarks/quality.py [--repeats 3] [--epsilons 1,3,10] [--quick]
                                 [--splits gbsg2,registry,rare] [--families vae,marginals]
                                 [--no-anchor] [--results benchmarks/RESULTS.md]

On GBSG2 (four non-IID hospitals), on the built-in registry simulator (six
hospitals of 40–400) and on a rare-disease split of it (eight hospitals of 20–60
training patients), with 25% of every site's patients held out, it compares:
- fedsynth: the federated study at ε ∈ {1, 3, 10} per site, run for real in
  Flower's simulation engine (`simulation.engine.simulate_study`), with
  every generator family of the registry, and again behind SecAgg+ for a family
  whose sites then add only shares of the noise (every site in every sum, one
  possibly colluding);
- central AIM on the pooled training rows at the same ε and δ (`anchor`): what a
  trusted curator holding every record could release, by an independent implementation
  (smartnoise-synth) in an environment of its own, in the same run, split and repeats;
- each site alone at the same ε: what a hospital can do without the
  federation — the node's own DP training (`protocols.generators.vae.training.train_round`, all
  the plan's rounds) or release (`protocols.generators.marginals.release`), which is what a
  one-site federation computes;
- each family pooled over all training records without DP (the upper limit
  no consortium may legally reach);
- independent marginals: every column resampled on its own from the pooled
  training records (perfect columns, no structure; not private either).
Every cohort is scored by `protocols.evaluation` against the pooled training
records, with the held-out records for utility and privacy, and timed. Results are
means over repeats (DP noise comes from a CSPRNG, so repeats differ), with the
range in brackets; the issue-15 targets per split and a privacy–utility plot
(`privacy_utility.png`, beside the results file) follow from them.

A study the operator-side size rule refuses (`protocols.generators.
check_site_size`: a site below the plan's `minimum_site_records`, which the
VAE's plan-fixed sample rate raises at small ε) is listed as refused, federated
(`simulate` refuses the whole study) and alone alike, instead of scored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import datasets  # noqa: E402
import quality_report as report  # noqa: E402
from anchor import AnchorEnvironment, anchor_environment, central_aim  # noqa: E402

from node.site_data import encode_site  # noqa: E402
from protocols.errors import PlanError  # noqa: E402
from protocols.evaluation import evaluate_cohort  # noqa: E402
from protocols.generators import FAMILIES, check_site_size, family_for  # noqa: E402
from protocols.plan import StudyPlan  # noqa: E402
from protocols.records import check_file  # noqa: E402
from protocols.schema import Schema, parse_schema  # noqa: E402
from simulation.engine import simulate_study  # noqa: E402

EPSILONS = (1.0, 3.0, 10.0)
SPLITS: dict[str, Callable[[], datasets.BenchmarkData]] = {
    "gbsg2": datasets.gbsg2, "registry": datasets.registry, "rare": datasets.rare}
# Where this benchmark's output ends in RESULTS.md; sections below it are kept.
END_MARKER = "<!-- end of benchmarks/quality.py output; sections below are kept -->"


def main() -> None:
    args = _parser().parse_args()
    if args.plot_from:
        _plot_from(args.plot_from, args.results.with_name("privacy_utility.png"))
        return
    plan = StudyPlan(rows=args.rows)
    started = time.perf_counter()
    environment = None if args.no_anchor else anchor_environment()
    plot_path = args.results.with_name("privacy_utility.png")
    lines = ["# fedsynth privacy–utility benchmark\n",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Run: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.machine()}, "
             f"plan: {_plan_text(plan, args.families)}  ",
             "Central AIM: " + (environment.describe() if environment else "not run")
             + f"  \nPlot: `{plot_path.name}`\n", report.COLUMN_NOTES]
    by_split = {}
    with tempfile.TemporaryDirectory(prefix="fedsynth-quality-") as tmp:
        for name in args.splits:
            data = SPLITS[name]()
            results = run_dataset(data, plan, Path(tmp), args, environment)
            by_split[name] = results
            if args.runs_json:
                _save_runs(args.runs_json, by_split)
            lines += report.table(data, results)
            if name == "gbsg2":
                lines += report.issue3_targets(results, args.families)
            lines += report.issue15_targets(name, results)
            print("\n".join(lines[-60:]), flush=True)
    report.plot_privacy_utility(by_split, plot_path)
    lines.append(f"\nTotal wall time: {time.perf_counter() - started:.0f} s.")
    _write_results(args.results, "\n".join(lines) + "\n")
    print(f"\nwritten to {args.results} and {plot_path}")


def _save_runs(path: Path, by_split: dict[str, dict]) -> None:
    """Every run's scores (or refusal), by split, method and ε, as JSON: what
    `--plot-from` merges when a benchmark was run in parts."""
    path.write_text(json.dumps({split: [{"method": method, "epsilon": str(eps), "runs": runs}
                                        for (method, eps), runs in results.items()]
                                for split, results in by_split.items()}), encoding="utf-8")


def _plot_from(paths: list[Path], plot_path: Path) -> None:
    """The privacy–utility plot of runs saved by `--runs-json` in several parts."""
    by_split: dict[str, dict] = {}
    for path in paths:
        for split, entries in json.loads(path.read_text(encoding="utf-8")).items():
            results = by_split.setdefault(split, {})
            for entry in entries:
                key = (entry["method"], float(entry["epsilon"]))
                results.setdefault(key, []).extend(entry["runs"])
    report.plot_privacy_utility(by_split, plot_path)
    print(f"written to {plot_path}")


def _write_results(path: Path, text: str) -> None:
    """Replace this benchmark's own part of `path` (everything above `END_MARKER`),
    keeping what other benchmarks and people wrote below it."""
    kept = ""
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if END_MARKER in old:
            kept = old[old.index(END_MARKER) + len(END_MARKER):]
    path.write_text(text + "\n" + END_MARKER + kept, encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epsilons", type=_epsilons, default=EPSILONS,
                        help="comma-separated ε per site (default 1,3,10)")
    parser.add_argument("--quick", action="store_true", help="ε = 3 only, one repeat")
    parser.add_argument("--splits", type=_choices(SPLITS), default=tuple(SPLITS),
                        help=f"comma-separated splits (default {','.join(SPLITS)})")
    parser.add_argument("--families", type=_choices(FAMILIES), default=tuple(FAMILIES),
                        help=f"comma-separated generator families (default {','.join(FAMILIES)})")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip central AIM (and the making of its environment)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--runs-json", type=Path,
                        help="also save every run's scores here (JSON), for --plot-from")
    parser.add_argument("--plot-from", type=Path, nargs="+",
                        help="only draw the plot, beside --results, from runs saved by "
                             "--runs-json (a benchmark run in parts)")
    return parser


def _epsilons(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def _choices(known: dict) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or 'nothing'} is not one of {', '.join(known)}")
        return names
    return parse


def run_dataset(data: datasets.BenchmarkData, plan: StudyPlan, tmp: Path,
                args: argparse.Namespace, environment: AnchorEnvironment | None
                ) -> report.Results:
    """Scores of every method, keyed by (method, ε), one entry per repeat (or, for a
    study the operator-side size rule refuses, the reason). A score carries the cohort's
    wall time and, for a federated study, the bytes each site sent."""
    folder = tmp / data.name
    schema_path, site_paths, holdout_path = _write_inputs(data, folder)
    schema = parse_schema(schema_path.read_text())
    real = _parsed(check_file(folder / "pooled.csv", schema), "pooled training records")
    holdout = _parsed(check_file(holdout_path, schema), "holdout")
    epsilons = (3.0,) if args.quick else args.epsilons
    repeats = 1 if args.quick else args.repeats
    results: report.Results = {}

    def score(method: str, eps: float, make: Callable[[], pd.DataFrame | str],
              sent: int | None = None) -> None:
        started = time.perf_counter()
        cohort = make()
        seconds = time.perf_counter() - started
        if isinstance(cohort, str):  # refused: the reason, not a score
            results.setdefault((method, eps), []).append(cohort)
            return
        scores = evaluate_cohort(schema, real, cohort, holdout=holdout, figures=False)["scores"]
        results.setdefault((method, eps), []).append(
            {**scores, "wall_s": seconds, "bytes_per_site": sent})

    for repeat in range(repeats):
        for eps in epsilons:
            for family in args.families:
                run_plan = plan.with_overrides(epsilon=eps, seed=repeat, generator=family,
                                               rounds=FAMILIES[family].default_rounds)
                out = folder / f"federated-{family}-{eps:g}-{repeat}"
                score(report.federated_method(family), eps,
                      lambda: federated(schema_path, site_paths, run_plan, out, schema),
                      bytes_per_site(schema, run_plan))
                secure = run_plan.with_overrides(secure_aggregation=True,
                                                 min_sites=len(site_paths), colluders=1)
                if FAMILIES[family].exposed_epsilon(secure, schema) is not None:
                    # its sites add shares of the noise behind SecAgg+: every site in every
                    # sum, one of them possibly colluding with the coordinator
                    out = folder / f"federated-{family}-secure-{eps:g}-{repeat}"
                    score(report.federated_method(family, secure=True), eps,
                          lambda: federated(schema_path, site_paths, secure, out, schema),
                          bytes_per_site(schema, secure))
                for path in site_paths:
                    score(f"{path.stem} alone, {family}", eps,
                          lambda: train_alone(schema, [path], run_plan, folder / "alone.csv"))
            if environment is not None:
                aim_plan = plan.with_overrides(epsilon=eps, seed=repeat)
                score(report.ANCHOR, eps, lambda: central_aim(
                    environment, schema, real, aim_plan, folder / f"aim-{eps:g}-{repeat}"))
        for family in args.families:
            reference = plan.with_overrides(epsilon=math.inf, seed=repeat, generator=family,
                                            rounds=FAMILIES[family].default_rounds)
            score(f"{family} pooled, no DP", math.inf,
                  lambda: train_alone(schema, site_paths, reference,
                                      folder / "pooled-cohort.csv"))
        score("independent marginals", math.inf,
              lambda: independent_marginals(real, plan.rows, repeat))
        print(f"{data.name}: repeat {repeat + 1}/{repeats} done", flush=True)
    return results


def bytes_per_site(schema: Schema, plan: StudyPlan) -> int:
    """What one site sends over the study: the bytes of the arrays it replies with each
    round (the family's global arrays, in their shapes and dtypes) times the rounds."""
    arrays = family_for(plan).global_arrays(schema, plan)
    return plan.rounds * sum(array.nbytes for array in arrays.values())


def federated(schema_path: Path, site_paths: list[Path], plan: StudyPlan, out: Path,
              schema: Schema) -> pd.DataFrame | str:
    """The study in Flower's simulation engine (no federated evaluation: the plan's
    evaluation-epsilon is 0); the refusal's reason if `simulate` refuses a site."""
    smallest = family_for(plan).minimum_site_records(plan)
    sizes = {path.stem: len(pd.read_csv(path)) for path in site_paths}
    small = [f"{name} ({n})" for name, n in sizes.items() if n < smallest]
    try:
        simulate_study(schema_path, site_paths, plan, out, progress=lambda _: None)
    except PlanError:
        if not small:
            raise
        return f"refused: {', '.join(small)} below the plan's minimum of {smallest} records"
    return _parsed(check_file(out / "synthetic.csv", schema))


def train_alone(schema: Schema, paths: list[Path], plan: StudyPlan,
                out: Path) -> pd.DataFrame | str:
    """The node's DP release or training, all of it, on the records in `paths` as one site:
    what a one-site federation computes, without Flower's start-up cost. The operator-side
    size rule applies as in `simulate`: a refused site gives the reason, not a cohort."""
    parsed = pd.concat([_parsed(check_file(p, schema)) for p in paths], ignore_index=True)
    site = encode_site(parsed, schema, "alone")
    try:
        check_site_size(plan, site.n_records, "alone")
    except PlanError:
        return (f"refused: {site.n_records} records, below the plan's minimum of "
                f"{family_for(plan).minimum_site_records(plan)}")
    family = family_for(plan)
    arrays, history, released = family.global_arrays(schema, plan), {}, 0
    privacy = family.site_privacy(plan, schema)
    for round_number in range(1, plan.rounds + 1):
        release = family.release(schema, site, plan, privacy, released, arrays)
        arrays, released = release.arrays, release.steps_total
        history[round_number] = arrays
    family.sample(schema, plan, arrays, history.__getitem__).to_csv(out, index=False)
    return _parsed(check_file(out, schema))


def independent_marginals(real: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: real[name].to_numpy()[rng.integers(0, len(real), rows)]
                         for name in real.columns})


def _write_inputs(data: datasets.BenchmarkData, folder: Path) -> tuple[Path, list[Path], Path]:
    schema_path, paths = data.write_sites(folder)
    data.pooled.to_csv(folder / "pooled.csv", index=False)
    data.holdout.to_csv(folder / "holdout.csv", index=False)
    return schema_path, paths, folder / "holdout.csv"


def _parsed(validation, what: str = "cohort") -> pd.DataFrame:
    validation.raise_if_invalid()
    return validation.parsed


def _plan_text(plan: StudyPlan, families: list[str]) -> str:
    """The plan's settings that the families run here use."""
    parts = []
    if "marginals" in families:
        parts.append(f"marginals: {FAMILIES['marginals'].default_rounds} rounds")
    if "vae" in families:
        parts.append(f"vae: {plan.rounds} rounds × {plan.local_steps} local "
                     f"steps, sample rate q {plan.sample_rate:g} (expected q·n records per "
                     f"step), lr {plan.learning_rate}, clip {plan.max_grad_norm}, hidden "
                     f"{plan.hidden}, latent {plan.latent}")
    return "; ".join(parts + [f"δ {plan.delta}, {plan.rows} rows per cohort"])

if __name__ == "__main__":
    main()
