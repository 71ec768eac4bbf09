"""Blending-advisor benchmark (issue 17): what `fedsynth-node blend` advises a small site.

    python benchmarks/blend.py [--epsilon 3] [--families marginals,vae] [--rows 2000]

On GBSG2 split into four hospitals (`datasets.gbsg2`, 25% of each held out), the
federated study runs for real in Flower's simulation engine, once per generator
family; the smallest hospital then runs `fedsynth-node blend` on its own training
records with the released cohort, as a separate process pinned to two cores
(`taskset -c 0,1`) and checking the release against the signing key. It prints a
Markdown section: the curve (mean ± standard error over the splits, and the
standard deviation), the recommendations, the advice and the wall and CPU time of
the whole command (start-up, checks, every fit, writing). The cohort's DP noise
comes from the OS CSPRNG, so the curve differs from run to run; the blend itself
is seeded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import datasets  # noqa: E402

from protocols.evaluation.blend import ratio_label  # noqa: E402
from protocols.generators import FAMILIES  # noqa: E402
from protocols.plan import StudyPlan  # noqa: E402
from simulation.engine import simulate_study  # noqa: E402

PINNED = ("taskset", "-c", "0,1")


def main() -> None:
    args = _parser().parse_args()
    data = datasets.gbsg2()
    site = min(data.sites, key=lambda name: len(data.sites[name]))
    header = ["\n## Blending advisor (issue 17): how much of the cohort the smallest GBSG2 "
             "site should mix in\n",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Run: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.machine()}, "
             f"`fedsynth-node blend` pinned to 2 cores (`{' '.join(PINNED)}`)\n",
             f"Site: {site}, {len(data.sites[site])} training patients; the cohort is the "
             f"federated one of all four sites at ε = {args.epsilon:g} per site, "
             f"{args.rows} rows.\n"]
    print("\n".join(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="fedsynth-blend-") as tmp:
        folder = Path(tmp)
        os.environ["XDG_CONFIG_HOME"] = str(folder / "config")  # the study's signing key
        schema_path, site_paths = data.write_sites(folder)
        for family in args.families:
            plan = StudyPlan().with_overrides(epsilon=args.epsilon, rows=args.rows,
                                              generator=family,
                                              rounds=FAMILIES[family].default_rounds)
            cohort = folder / f"cohort-{family}"
            simulate_study(schema_path, site_paths, plan, cohort, progress=lambda _: None)
            report, seconds, cpu = _blend(schema_path, folder / f"{site}.csv", cohort,
                                          folder / f"advice-{family}",
                                          folder / "config" / "fedsynth")
            print("\n".join(_section(family, report, seconds, cpu)), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--families", type=lambda text: text.split(","),
                        default=list(FAMILIES))
    return parser


def _blend(schema: Path, records: Path, cohort: Path, out: Path,
           kit: Path) -> tuple[dict, float, float]:
    """Run the command as a site would, pinned to two cores; (blend.json, wall seconds,
    CPU seconds: what the wall time would be on an otherwise idle core)."""
    command = [*PINNED, sys.executable, "-m", "node.cli", "blend", "--schema", str(schema),
               "--data", str(records), "--synthetic", str(cohort), "--out", str(out),
               "--kit", str(kit)]
    before, started = _children_cpu(), time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - before
    return json.loads((out / "blend.json").read_text(encoding="utf-8")), seconds, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _section(family: str, report: dict, seconds: float, cpu: float) -> list[str]:
    metrics = report["metrics"]
    lines = [f"\n### Cohort: fedsynth {family}, federated\n",
             f"| synthetic : real | synthetic records (all {report['real_records']} patients) | "
             + " | ".join(f"{name} mean ± SE (SD)" for name in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for i, (ratio, added) in enumerate(zip(report["ratios"],
                                           report["synthetic_records_with_all_patients"])):
        chosen = "".join(f" **(recommended for {rec['outcome']})**"
                         for rec in report["recommendations"] if rec["ratio"] == ratio)
        cells = [f"{m['mean'][i]:.3f} ± {m['se'][i]:.3f} ({m['sd'][i]:.3f})"
                 for m in metrics.values()]
        lines.append(f"| {ratio_label(ratio)}{chosen} | {added} | " + " | ".join(cells) + " |")
    protocol = report["protocol"]
    models = "; ".join(sorted({f"{m['outcome']}: {m['model']}" for m in metrics.values()}))
    lines += ["",
              f"Splits: {protocol['repeats']} × {protocol['folds']}-fold, stratified by "
              f"{protocol['stratified_by']}, seed {protocol['seed']}. Models: {models}.  ",
              *(f"Recommended for {rec['outcome']}: {ratio_label(rec['ratio'])} (best mean "
                f"{rec['metric']} at {ratio_label(rec['best_ratio'])}); rule: {rec['rule']}.  "
                for rec in report["recommendations"]),
              f"Advice: \"{report['sentence']}\"  ",
              f"`fedsynth-node blend` on 2 cores, end to end: {seconds:.1f} s wall, "
              f"{cpu:.1f} s CPU."]
    return lines


if __name__ == "__main__":
    main()
