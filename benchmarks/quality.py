"""Privacy–utility benchmark (issues 3 and 15): how good is a fedsynth cohort, and at what ε?

    python benchmarks/quality.py [--repeats 3] [--epsilons 1,3,10] [--quick]
                                 [--results benchmarks/RESULTS.md]

On GBSG2 (four non-IID hospitals), on the built-in registry simulator (six
hospitals of 40–400) and on a rare-disease split of it (eight hospitals of 20–60
training patients), with 25% of every site's patients held out, it compares:
- fedsynth: the federated study at ε ∈ {1, 3, 10} per site, run for real in
  Flower's simulation engine (`simulation.engine.simulate_study`), with
  every generator family of the registry, and again behind SecAgg+ for a family
  whose sites then add only shares of the noise (every site in every sum, one
  possibly colluding);
- each site alone at the same ε: what a hospital can do without the
  federation — the node's own DP training (`protocols.generators.vae.training.train_round`, all
  the plan's rounds) or release (`protocols.generators.marginals.release`), which is what a
  one-site federation computes;
- each family pooled over all training records without DP (the upper limit
  no consortium may legally reach);
- independent marginals: every column resampled on its own from the pooled
  training records (perfect columns, no structure; not private either).
Every cohort is scored by `protocols.evaluation` against the pooled training
records, with the held-out records for utility and privacy. Results are means
over repeats (DP noise comes from the OS CSPRNG, so repeats differ), with the
range in brackets.

A study the operator-side size rule refuses (`protocols.generators.
check_site_size`: a site below the plan's `minimum_site_records`, which the
VAE's plan-fixed sample rate raises at small ε) is listed as refused, federated
(`simulate` refuses the whole study) and alone alike, instead of scored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import datasets  # noqa: E402

from node.site_data import encode_site  # noqa: E402
from protocols.errors import PlanError  # noqa: E402
from protocols.evaluation import evaluate_cohort  # noqa: E402
from protocols.generators import FAMILIES, check_site_size, family_for  # noqa: E402
from protocols.plan import StudyPlan  # noqa: E402
from protocols.records import check_file  # noqa: E402
from protocols.schema import Schema, parse_schema  # noqa: E402
from simulation.engine import simulate_study  # noqa: E402

EPSILONS = (1.0, 3.0, 10.0)
COLUMNS = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_ratio",
           "dcr_share", "exact_copies", "mia_auc", "km_distance", "hr_direction_agreement",
           "bias_flags")
# Where this benchmark's output ends in RESULTS.md; sections below it are kept.
END_MARKER = "<!-- end of benchmarks/quality.py output; sections below are kept -->"
HEADERS = ("shapes", "pairs", "strong kept", "TSTR ratio", "DCR share", "copies", "MIA AUC",
           "KM dist", "HR directions", "bias flags")


def main() -> None:
    args = _parser().parse_args()
    plan = StudyPlan(rows=args.rows)
    started = time.perf_counter()
    lines = ["# fedsynth privacy–utility benchmark\n",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Run: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.machine()}, "
             f"plan: {_plan_text(plan)}\n"]
    with tempfile.TemporaryDirectory(prefix="fedsynth-quality-") as tmp:
        for data in (datasets.gbsg2(), datasets.registry(), datasets.rare()):
            results = run_dataset(data, plan, Path(tmp), args)
            lines += _table(data, results)
            if data.name == "gbsg2":
                lines += _targets(results)
            print("\n".join(lines[-40:]), flush=True)
    lines.append(f"\nTotal wall time: {time.perf_counter() - started:.0f} s.")
    _write_results(args.results, "\n".join(lines) + "\n")
    print(f"\nwritten to {args.results}")


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
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    return parser


def _epsilons(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def run_dataset(data: datasets.BenchmarkData, plan: StudyPlan, tmp: Path,
                args: argparse.Namespace) -> dict[tuple[str, float], list[dict | str]]:
    """Scores of every method, keyed by (method, ε), one entry per repeat (or, for a
    study the operator-side size rule refuses, the reason)."""
    folder = tmp / data.name
    schema_path, site_paths, holdout_path = _write_inputs(data, folder)
    schema = parse_schema(schema_path.read_text())
    real = _parsed(check_file(folder / "pooled.csv", schema), "pooled training records")
    holdout = _parsed(check_file(holdout_path, schema), "holdout")
    epsilons = (3.0,) if args.quick else args.epsilons
    repeats = 1 if args.quick else args.repeats
    results: dict[tuple[str, float], list[dict | str]] = {}

    def score(method: str, eps: float, cohort: pd.DataFrame | str) -> None:
        if isinstance(cohort, str):  # refused: the reason, not a score
            results.setdefault((method, eps), []).append(cohort)
            return
        report = evaluate_cohort(schema, real, cohort, holdout=holdout, figures=False)
        results.setdefault((method, eps), []).append(report["scores"])

    for repeat in range(repeats):
        for eps in epsilons:
            for family in FAMILIES:
                run_plan = plan.with_overrides(epsilon=eps, seed=repeat, generator=family,
                                               rounds=FAMILIES[family].default_rounds)
                out = folder / f"federated-{family}-{eps:g}-{repeat}"
                score(f"fedsynth {family}, federated", eps,
                      federated(schema_path, site_paths, run_plan, out, schema))
                secure = run_plan.with_overrides(secure_aggregation=True,
                                                 min_sites=len(site_paths), colluders=1)
                if FAMILIES[family].exposed_epsilon(secure, schema) is not None:
                    # its sites add shares of the noise behind SecAgg+: every site in every
                    # sum, one of them possibly colluding with the coordinator
                    out = folder / f"federated-{family}-secure-{eps:g}-{repeat}"
                    score(f"fedsynth {family}, federated, SecAgg+ shares", eps,
                          federated(schema_path, site_paths, secure, out, schema))
                for path in site_paths:
                    cohort = train_alone(schema, [path], run_plan, folder / "alone.csv")
                    score(f"{path.stem} alone, {family}", eps, cohort)
        for family in FAMILIES:
            reference = plan.with_overrides(epsilon=math.inf, seed=repeat, generator=family,
                                            rounds=FAMILIES[family].default_rounds)
            pooled = train_alone(schema, site_paths, reference, folder / "pooled-cohort.csv")
            score(f"{family} pooled, no DP", math.inf, pooled)
        score("independent marginals", math.inf, independent_marginals(real, plan.rows, repeat))
        print(f"{data.name}: repeat {repeat + 1}/{repeats} done", flush=True)
    return results


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


def _plan_text(plan: StudyPlan) -> str:
    return (f"{plan.rounds} rounds × {plan.local_steps} local steps, sample rate q "
            f"{plan.sample_rate:g} (expected q·n records per step), "
            f"lr {plan.learning_rate}, clip {plan.max_grad_norm}, hidden {plan.hidden}, "
            f"latent {plan.latent}, δ {plan.delta}, {plan.rows} rows per cohort")


def _fmt(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    mean = float(np.mean(present))
    if len(present) == 1:
        return f"{mean:.3g}" if abs(mean) >= 10 else f"{mean:.3f}"
    return f"{mean:.3f} [{min(present):.2f}–{max(present):.2f}]"


def _table(data: datasets.BenchmarkData, results: dict) -> list[str]:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.sites.items())
    lines = [f"\n## {data.name}: {len(data.pooled)} training patients ({sizes}), "
             f"{len(data.holdout)} held out\n",
             "| method | ε per site | " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---|" * len(HEADERS)]
    for (method, eps), runs in results.items():
        scored = [r for r in runs if isinstance(r, dict)]
        refusals = sorted({r for r in runs if isinstance(r, str)})
        if refusals:
            cells = [f"{'; '.join(refusals)}"] + ["—"] * (len(COLUMNS) - 1)
        else:
            cells = [_fmt([r[c] for r in scored]) for c in COLUMNS]
        lines.append(f"| {method} | {'—' if math.isinf(eps) else f'{eps:g}'} | "
                     + " | ".join(cells) + " |")
    return lines


def _targets(results: dict) -> list[str]:
    if ("fedsynth vae, federated", 3.0) not in results:
        return []
    marg = results[("independent marginals", math.inf)]
    lines = ["\n### Issue 3 targets, GBSG2 at ε = 3 per site (means over repeats)\n"]
    for family in FAMILIES:
        fed = [r for r in results[(f"fedsynth {family}, federated", 3.0)] if isinstance(r, dict)]
        if not fed:
            lines.append(f"\n{family}: the study was refused at ε = 3, no target is met.")
            continue
        # A site the size rule refuses alone has no score to beat.
        alone = [runs for (method, eps), runs in results.items()
                 if eps == 3.0 and method.endswith(f"alone, {family}")
                 and any(isinstance(r, dict) for r in runs)]
        checks = [
            ("column shapes ≥ 0.85", _mean(fed, "column_shapes") >= 0.85),
            ("structure clearly better than independent marginals (strong associations "
             "kept ≥ 0.3; marginals keep none)",
             _mean(fed, "strong_associations_kept")
             >= _mean(marg, "strong_associations_kept") + 0.3),
            ("TSTR AUC ratio ≥ 0.85", _mean(fed, "tstr_ratio") >= 0.85),
            ("DCR share ≤ 0.6", _mean(fed, "dcr_share") <= 0.6),
            ("no exact copies", all(r["exact_copies"] == 0 for r in fed)),
            ("federated beats every site alone on pairs, strong kept and TSTR",
             all(_mean(fed, k) > _mean(a, k) for a in alone
                 for k in ("pairwise", "strong_associations_kept", "tstr_ratio"))),
        ]
        lines.append(f"\n{family}:")
        lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks]
    return lines


def _mean(runs: list[dict | str], key: str) -> float:
    present = [r[key] for r in runs if isinstance(r, dict) and r[key] is not None]
    return float(np.mean(present)) if present else float("nan")


if __name__ == "__main__":
    main()
