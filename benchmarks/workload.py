"""Where should the pair tables' budget go: every pair once, or AIM-style, adaptively?

    python benchmarks/workload.py [--repeats 3] [--epsilon 3] [--splits rare,gbsg2]

AIM (McKenna et al., VLDB 2022) spends its budget adaptively: it measures a few
marginals, fits a model, picks the marginal the model gets most wrong, measures
it, and so on. A federated version has to pick from what the sites released
(securely summed, noised) and must fix every round's noise in the plan. This
benchmark asks whether that pays on fedsynth's splits, on the pooled training
records with the central noise a SecAgg+ sum of the sites' shares carries, at the
same total privacy (the tables' precision Σ 1/σ² is held fixed):
- all pairs: the column tables, then every pair table once (the marginals
  family as it ships, the outcome columns' pairs first into the model; or, as before,
  strongest first);
- screen s, refine k: the same column tables; every pair table with the share s
  of the pairs' budget; then the k pairs whose noisy tables hold the most mutual
  information (a released value: post-processing) measured again with the rest;
- pairs s, then k outcome triples: every pair table with the share s; then the k
  3-way tables (target, a, b) whose pairs with the schema's target hold the most
  noisy mutual information together, measured with the rest (AIM's 3-way marginals,
  chosen where a study's prediction needs them).
Every variant is fitted with the same graphical model (`marginals.graphical`,
both measurements of a refined pair and the 3-way tables enter it, the outcome
columns' pairs first) and scored by `protocols.evaluation`
against the pooled records, with the held-out ones for TSTR. Noise is the
discrete Gaussian from the CSPRNG (`distributed_noise.noisy_share`), so repeats differ.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import datasets  # noqa: E402
from quality_report import mean_range  # noqa: E402

from protocols.count_tables import PAIR_NOISE_RATIO, build_layout, pair_name  # noqa: E402
from protocols.evaluation import evaluate_cohort  # noqa: E402
from protocols.generators.marginals import graphical  # noqa: E402
from protocols.generators.marginals.tables import release_noise_multiplier, table_counts  # noqa: E402
from protocols.plan import StudyPlan  # noqa: E402
from protocols.privacy.distributed_noise import noisy_share  # noqa: E402
from protocols.records import check_file  # noqa: E402
from protocols.schema import parse_schema  # noqa: E402

SCORES = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_ratio",
          "hr_direction_agreement", "km_distance")

@dataclass(frozen=True)
class Variant:
    label: str
    screen: float  # share of the pairs' budget spent on every pair table
    refined: int | None = 0  # pairs measured again with the rest (None: one per column)
    triples: int = 0  # or: (target, a, b) tables measured with the rest
    outcome_first: bool = True  # the outcome columns' pairs enter the model first


VARIANTS = (Variant("all pairs (as shipped)", 1.0),
            Variant("all pairs, strongest first (before issue 15 step 3)", 1.0,
                    outcome_first=False),
            Variant("screen ½, refine one pair per column", 0.5, None),
            Variant("screen ¼, refine one pair per column", 0.25, None),
            Variant("pairs ¾, then 3 outcome triples", 0.75, triples=3),
            Variant("pairs ½, then 3 outcome triples", 0.5, triples=3))


def main() -> None:
    args = _parser().parse_args()
    started = time.perf_counter()
    lines = ["## Pair budget: every pair once, or screen then refine (AIM-style)\n",
             f"Command: `python {' '.join(sys.argv)}`; ε = {args.epsilon:g}, δ 1e-5, central "
             f"noise (a SecAgg+ sum of shares), {args.repeats} repeats, 2000 rows; mean "
             "[min–max].\n",
             "| split | variant | " + " | ".join(SCORES) + " |",
             "|---|---|" + "---|" * len(SCORES)]
    with tempfile.TemporaryDirectory(prefix="fedsynth-workload-") as tmp:
        for data in (d for d in (datasets.gbsg2(), datasets.registry(), datasets.rare())
                     if d.name in args.splits):
            for label, runs in _run_split(data, Path(tmp), args).items():
                cells = [mean_range([r[s] for r in runs]) for s in SCORES]
                lines.append(f"| {data.name} | {label} | " + " | ".join(cells) + " |")
            print("\n".join(lines), flush=True)
    lines.append(f"\nWall time: {time.perf_counter() - started:.0f} s.")
    print("\n".join(lines))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--splits", type=lambda t: t.split(","), default=["rare", "gbsg2"])
    return parser


def _run_split(data: datasets.BenchmarkData, tmp: Path, args: argparse.Namespace
               ) -> dict[str, list[dict]]:
    folder = tmp / data.name
    schema_path, _ = data.write_sites(folder)
    data.pooled.to_csv(folder / "pooled.csv", index=False)
    data.holdout.to_csv(folder / "holdout.csv", index=False)
    schema = parse_schema(schema_path.read_text())
    real, holdout = (_parsed(folder / f"{name}.csv", schema) for name in ("pooled", "holdout"))
    plan = StudyPlan(epsilon=args.epsilon, generator="marginals", rounds=2, rows=2000)
    plain = build_layout(schema)
    n_one, n_two = table_counts(plain)
    precision = release_noise_multiplier(plan, n_one, n_two) ** -2  # Σ_t 1/σ_t², held fixed
    column_share = n_one / (n_one + n_two / PAIR_NOISE_RATIO ** 2)
    sigma_one = math.sqrt(n_one / (column_share * precision))
    results: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for variant in VARIANTS:
            columns = _noisy(plain.column_counts(real), sigma_one)
            layout = plain.with_groups(columns)
            exact = layout.pair_counts(real)
            pair_budget = (1 - column_share) * precision
            sigma_two = math.sqrt(n_two / (variant.screen * pair_budget))
            pairs = _noisy(exact, sigma_two)
            extra = []
            if variant.screen < 1:
                cliques = (_outcome_triples(layout, schema.roles.target, pairs, variant.triples)
                           if variant.triples else _strongest_pairs(layout, pairs,
                                                                    variant.refined or n_one))
                sigma_again = math.sqrt(len(cliques) / ((1 - variant.screen) * pair_budget))
                extra = [graphical.Measured(clique, table, sigma_again / sigma_one)
                         for clique, table in zip(cliques, _noisy_cliques(layout, real, cliques,
                                                                          sigma_again))]
            model = graphical.fit_model(
                layout, {**columns, **pairs}, pair_noise_ratio=sigma_two / sigma_one,
                extra=extra,
                outcome=schema.roles.columns if variant.outcome_first else ())
            cohort = graphical.sample_model(model, plan.rows, repeat)
            path = folder / "cohort.csv"
            cohort.to_csv(path, index=False)
            report = evaluate_cohort(schema, real, _parsed(path, schema), holdout=holdout,
                                     figures=False)
            results.setdefault(variant.label, []).append(report["scores"])
        print(f"{data.name}: repeat {repeat + 1}/{args.repeats} done", flush=True)
    return results


def _strongest_pairs(layout, pairs: dict[str, np.ndarray], k: int) -> list[tuple[str, str]]:
    """The k pairs whose noisy tables hold the most mutual information."""
    ranked = sorted(itertools.combinations(layout.columns, 2), key=lambda ab: -(
        graphical._mutual_information(pairs[pair_name(*ab)])))
    return [(a.name, b.name) for a, b in ranked[:k]]


def _outcome_triples(layout, target: str, pairs: dict[str, np.ndarray], k: int
                     ) -> list[tuple[str, str, str]]:
    """The k tables (target, a, b) whose pairs (target, a) and (target, b) hold the most
    noisy mutual information together (released values: post-processing)."""
    order = [c.name for c in layout.columns]
    by_name = {c.name: c for c in layout.columns}

    def with_target(name: str) -> float:
        a, b = sorted((by_name[name], by_name[target]), key=lambda c: order.index(c.name))
        return graphical._mutual_information(pairs[pair_name(a, b)])

    others = [name for name in order if name != target]
    ranked = sorted(itertools.combinations(others, 2),
                    key=lambda ab: -(with_target(ab[0]) + with_target(ab[1])))
    return [(target, a, b) for a, b in ranked[:k]]


def _noisy_cliques(layout, real, cliques, sigma: float) -> list[np.ndarray]:
    """Each clique's table of `real` on `layout`'s coarse bins (axes in the clique's
    order), plus the discrete Gaussian noise."""
    fine = layout.fine_codes(real)
    by_name = {c.name: c for c in layout.columns}
    tables = []
    for clique in cliques:
        cols = [by_name[name] for name in clique]
        table = np.zeros([layout.coarse_size(c) for c in cols])
        np.add.at(table, tuple(layout.coarse(c, fine[c.name]) for c in cols), 1.0)
        tables.append(noisy_share(table.astype(np.int64), sigma).astype(float))
    return tables


def _noisy(tables: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    return {name: noisy_share(t.astype(np.int64), sigma).astype(float)
            for name, t in tables.items()}


def _parsed(path: Path, schema):
    validation = check_file(path, schema)
    validation.raise_if_invalid()
    return validation.parsed


if __name__ == "__main__":
    main()
