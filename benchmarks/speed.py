"""Speed and memory of fedsynth, measured in one run on this machine.

    python benchmarks/speed.py [--quick] [--results benchmarks/SPEED.md]

Prints (and writes to SPEED.md) every figure issue 4 asks for, each measured
here, now, side by side:
1. DP-SGD step throughput on one site: no DP, Opacus per-sample hooks (the
   reference), and the nodes' path (ghost clipping + CSPRNG noise, built by
   `protocols.generators.vae.training.dp_setup`); then what the CSPRNG costs: the same ghost
   clipping with torch's generator noise (Opacus' own
   `DPOptimizerFastGradientClipping`, built here only), and the draws alone.
   Every path takes its batches from the nodes' Poisson sampler, and the paths
   run in interleaved blocks (median block reported), so load from other jobs
   hits them alike.
2. A whole study with DP vs the same study with `--epsilon inf` (same sites,
   plan and rows), each as a real `fedsynth-coordinator simulate` process, in
   interleaved pairs (DP first, then non-DP first, ...): each run and the median
   of the pairs' ratios.
3. The demo (6 hospitals, federated evaluation on) end to end, start-up
   included, with where the time goes.
4. A study with 50 simulated sites in one go, with the peak memory of the whole
   process tree (coordinator + Ray workers): the VAE in plain FedAvg, and the
   marginals family behind SecAgg+ with every site in every secure sum (its sites
   add shares of the noise; issue 15).
5. Cohort sampling speed (rows/s) and the bytes each site uploads per round, for
   each generator family (the marginals family's time includes fitting its
   graphical model).
`--quick` shrinks the 50-site VAE study to 2 rounds (for a smoke run). `--sections 4,5`
runs only those sections and replaces only them in the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import statistics
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from flwr.app import ArrayRecord
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from simulation.cli import DEMO_EVALUATION_EPSILON
from node.site_data import load_site
from simulation.engine import loopback_backend_config
from protocols.count_tables import build_layout
from protocols.generators import FAMILIES, family_for
from protocols.generators.marginals.graphical import fit_model, sample_model
from protocols.generators.family import SitePrivacy
from protocols.generators.vae.accounting import dpsgd_epsilon, dpsgd_privacy
from protocols.generators.vae.training import (GRADIENT_NORMALISER, dp_setup, poisson_batches,
                                               train_round, train_step)
from protocols import messages
from protocols.privacy.accounting import RDP_ORDERS
from protocols.demo_registry import simulate_registry
from protocols.privacy.dp_noise import poisson_mask, secure_normal
from protocols.encoding import build_encoding
from protocols.generators.vae.model import build_generator, per_record_loss
from protocols.plan import StudyPlan
from protocols.schema import parse_schema
from protocols.generators.vae.bounds import ADAM_BETAS

ROOT = Path(__file__).resolve().parents[1]
STUDY_PAIRS = 3
# (label, kind): the per-step comparison, then the CSPRNG's cost (same clipping, other noise).
STEP_PATHS = (("no DP", "plain"), ("Opacus per-sample hooks (reference)", "hooks"),
              ("nodes' path: ghost clipping + CSPRNG noise (`dp_setup`)", "ghost"))
NOISE_PATHS = (("ghost clipping + torch generator noise (benchmark only)", "ghost-torch"),
               ("ghost clipping + CSPRNG noise (nodes' path)", "ghost"))


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    lines = ["# fedsynth speed benchmark\n",
             f"Command: `python benchmarks/speed.py{' --quick' if args.quick else ''}`  ",
             f"Run: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.machine()}, "
             f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
             f"torch {torch.__version__}\n"]
    with tempfile.TemporaryDirectory(prefix="fedsynth-bench-") as tmp:
        folder = Path(tmp)
        schema_path, sites = _write_registry(folder / "demo", n_sites=6)
        sections = {1: lambda: _step_throughput(schema_path, sites),
                    2: lambda: _study_ratio(schema_path, sites, folder),
                    3: lambda: _demo(folder), 4: lambda: _fifty_sites(folder, args.quick, args.fifty),
                    5: lambda: _sampling_and_upload(schema_path, sites)}
        for number, measure in sections.items():
            if args.sections and number not in args.sections:
                continue
            section = measure()
            print("\n".join(section), flush=True)
            lines += section
    text = "\n".join(lines) + "\n"
    if args.sections and args.results.exists():
        text = _replace_sections(args.results.read_text(encoding="utf-8"), text)
    args.results.write_text(text, encoding="utf-8")
    print(f"\nwritten to {args.results}")


def _replace_sections(old: str, new: str) -> str:
    """`old` with each "## N." section that `new` holds replaced by `new`'s, and `new`'s
    run line noted above them."""
    def split(text: str) -> tuple[str, dict[str, str]]:
        head, *parts = text.split("\n## ")
        return head, {part.split(".", 1)[0]: "\n## " + part for part in parts}
    old_head, old_parts = split(old)
    new_head, new_parts = split(new)
    run = next(line for line in new_head.splitlines() if line.startswith("Run:"))
    merged = {**old_parts, **new_parts}
    note = f"Sections {', '.join(sorted(new_parts))} rerun alone: {run[5:]}\n"
    return old_head.rstrip("\n") + "\n" + note + "".join(merged[key] for key in sorted(merged))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", type=lambda text: {int(n) for n in text.split(",")},
                        help="comma-separated section numbers to run (default: all)")
    parser.add_argument("--fifty", choices=("vae", "marginals", "both"), default="both",
                        help="which 50-site studies section 4 runs (default both)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "SPEED.md")
    return parser


def _write_registry(folder: Path, n_sites: int, seed: int = 0) -> tuple[Path, list[Path]]:
    registry = simulate_registry(seed=seed, n_sites=n_sites)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.yaml").write_text(registry.schema_yaml)
    paths = []
    for name, frame in registry.sites.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
        paths.append(folder / f"{name}.csv")
    return folder / "schema.yaml", paths


def _step_throughput(schema_path: Path, sites: list[Path], blocks: int = 10,
                     steps: int = 40) -> list[str]:
    """Steps/s of each path, in interleaved blocks (the order reversing every block) so
    that other jobs' load hits every path alike; each cost is the median over blocks of
    the ratio of two paths' times in the same block."""
    schema = parse_schema(schema_path.read_text())
    site = load_site(sites[-1], schema)
    plan = StudyPlan()
    privacy = dpsgd_privacy(plan)
    data = torch.as_tensor(site.encoded)
    kinds = sorted({kind for _, kind in STEP_PATHS + NOISE_PATHS})
    setups = {kind: _step_setup(kind, site, plan, privacy) for kind in kinds}
    batches = poisson_batches(len(data), privacy.sample_rate)
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for block in range(blocks):
        for kind in kinds if block % 2 == 0 else kinds[::-1]:
            seconds[kind].append(_time_steps(kind, *setups[kind], data, batches, steps) / steps)

    def row(name: str, kind: str, against: str) -> str:
        rates = [1 / t for t in seconds[kind]]
        cost = statistics.median(a / b for a, b in zip(seconds[kind], seconds[against]))
        return (f"| {name} | {statistics.median(rates):.0f} ({min(rates):.0f}–"
                f"{max(rates):.0f}) | {cost:.2f}x |")

    q = privacy.sample_rate
    step_ms = 1000 * statistics.median(seconds["ghost"])
    draws = _draw_costs(setups["ghost"][0], len(data), q,
                        plan.max_grad_norm * privacy.noise_multiplier)
    return ["\n## 1. DP-SGD steps on one site",
            f"{site.n_records} records, sample rate q = {q:g} (expected q·n = "
            f"{q * site.n_records:.0f} records per step, Poisson, from the nodes' CSPRNG "
            f"sampler on every path), hidden {plan.hidden}, σ = "
            f"{privacy.noise_multiplier:.3f}, 1 thread; {blocks} interleaved blocks of "
            f"{steps} steps per path: median block (slowest–fastest), and the median over "
            "blocks of the time ratio within a block.\n",
            "| path | steps/s | cost vs no DP |", "|---|---|---|",
            *[row(name, kind, "plain") for name, kind in STEP_PATHS],
            "\n### What the CSPRNG noise costs\n",
            "The same ghost clipping, its noise drawn by torch's generator (Opacus' own "
            "`DPOptimizerFastGradientClipping`, as nodes did before this change) or from the OS "
            "CSPRNG (`SecureNoiseOptimizer`: Box–Muller over `os.urandom`, four normals summed "
            "per value):\n",
            "| path | steps/s | cost vs torch noise |", "|---|---|---|",
            *[row(name, kind, "ghost-torch") for name, kind in NOISE_PATHS],
            "\nThe draws alone, per step (median of 300 draws):\n",
            "| draw | CSPRNG (`protocols.privacy.dp_noise`) | torch generator | extra per step |",
            "|---|---|---|---|",
            *[f"| {name} | {ours:.3f} ms | {theirs:.3f} ms | {ours - theirs:+.3f} ms "
              f"({(ours - theirs) / step_ms:.0%} of a nodes'-path step) |"
              for name, ours, theirs in draws]]


def _step_setup(kind: str, site, plan: StudyPlan, privacy: SitePrivacy):
    """(model, module, optimizer) for one path of the comparison."""
    model = build_generator(site.encoding, plan.hidden, plan.latent, 0)
    if kind == "ghost":
        module, optimizer = dp_setup(model, plan, privacy)
    elif kind == "ghost-torch":  # the nodes' clipping, Opacus' own (torch generator) noise
        module = GradSampleModuleFastGradientClipping(
            model, loss_reduction="mean", max_grad_norm=plan.max_grad_norm,
            use_ghost_clipping=True)
        optimizer = DPOptimizerFastGradientClipping(
            _adam(module, plan), noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=plan.max_grad_norm, expected_batch_size=GRADIENT_NORMALISER,
            loss_reduction="mean")
    elif kind == "hooks":
        module = GradSampleModule(model)
        optimizer = DPOptimizer(_adam(module, plan), noise_multiplier=privacy.noise_multiplier,
                                max_grad_norm=plan.max_grad_norm,
                                expected_batch_size=GRADIENT_NORMALISER)
    else:
        module, optimizer = model, _adam(model, plan)
    return model, module, optimizer


def _adam(module: torch.nn.Module, plan: StudyPlan) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=plan.learning_rate, betas=ADAM_BETAS)


def _time_steps(kind, model, module, optimizer, data, batches, steps) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        batch = data[torch.from_numpy(next(batches))]
        if kind == "hooks":
            optimizer.zero_grad()
            out, mu, logvar = module(batch)
            per_record_loss(model.encoding, batch, out, mu, logvar).mean().backward()
            optimizer.step()
        else:
            train_step(module, optimizer, model, batch, private=kind != "plain")
    return time.perf_counter() - start


def _draw_costs(model: torch.nn.Module, n: int, rate: float, std: float,
                repeats: int = 300) -> list[tuple[str, float, float]]:
    """Median ms per step of each random draw, CSPRNG vs torch's generator."""
    shapes = [tuple(p.shape) for p in model.parameters()]
    count = sum(p.numel() for p in model.parameters())

    def median_ms(draw) -> float:
        return 1000 * _median_seconds(draw, repeats)

    return [
        (f"Gaussian noise, {count:,} values drawn as one vector (what the nodes do)",
         median_ms(lambda: secure_normal(count, std)),
         median_ms(lambda: torch.normal(0.0, std, size=(count,)))),
        (f"… the same values drawn tensor by tensor ({len(shapes)} draws)",
         median_ms(lambda: [secure_normal(s, std) for s in shapes]),
         median_ms(lambda: [torch.normal(0.0, std, size=s) for s in shapes])),
        (f"Poisson mask, {n} records",
         median_ms(lambda: poisson_mask(n, rate)), median_ms(lambda: torch.rand(n) < rate)),
    ]


def _run_cli(args: list[str]) -> tuple[float, list[tuple[float, str]], int]:
    """Run a fedsynth CLI; return wall time, timestamped stdout lines and peak tree RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "simulation.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = _PeakMemory(proc.pid)
    peak.start()
    lines = [(time.perf_counter() - start, line.rstrip()) for line in proc.stdout]
    err = proc.stderr.read()
    proc.wait()
    peak.stop()
    if proc.returncode:
        raise SystemExit(f"benchmark run failed ({' '.join(args)}):\n{err[-3000:]}")
    return time.perf_counter() - start, lines, peak.bytes


class _PeakMemory(threading.Thread):
    """Samples the resident memory of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root, self.bytes, self._done = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.bytes = max(self.bytes, total)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _simulate_args(schema: Path, sites: list[Path], out: Path, *extra: str) -> list[str]:
    return ["simulate", "--schema", str(schema), *[a for p in sites for a in ("--data", str(p))],
            "--out", str(out), *extra]


def _study_ratio(schema: Path, sites: list[Path], folder: Path) -> list[str]:
    """DP and non-DP studies in interleaved pairs (the order alternates), so that a
    slow spell from other jobs on the machine hits both sides of a pair alike."""
    runs, ratios = [], []
    for pair in range(STUDY_PAIRS):
        order = ("3", "inf") if pair % 2 == 0 else ("inf", "3")
        walls = {}
        for eps in order:
            wall, lines, _ = _run_cli(_simulate_args(schema, sites, folder / f"study-{eps}-{pair}",
                                                     "--epsilon", eps))
            walls[eps] = wall
            runs.append((pair + 1, eps, wall, *_round_times(lines, wall)))
        ratios.append(walls["3"] / walls["inf"])
    median = statistics.median(ratios)
    verdict = "within" if median <= 1.5 else "**above**"
    plan = StudyPlan()
    rows = [f"| {pair} | {'3' if eps == '3' else 'inf (no DP)'} | {wall:.1f} | {first:.1f} | "
            f"{per_round:.2f} | {tail:.1f} |" for pair, eps, wall, first, per_round, tail in runs]
    steady = {eps: statistics.median(r[4] for r in runs if r[1] == eps) for eps in ("3", "inf")}
    return ["\n## 2. A DP study vs the same study without DP",
            f"{len(sites)} sites, default plan ({plan.rounds} rounds × {plan.local_steps} steps, "
            f"sample rate {plan.sample_rate:g}), {plan.rows} rows, no federated evaluation, real "
            f"simulation engine; {STUDY_PAIRS} pairs run back to back, the order alternating.\n",
            "| pair | ε per site | wall s | start-up to round 1, s | each later round, s "
            "| after the last round, s |", "|---|---|---|---|---|---|", *rows,
            f"\nDP / non-DP wall time per pair: "
            f"{', '.join(f'{r:.2f}x' for r in ratios)}; "
            f"**median {median:.2f}x** ({verdict} the 1.5x target).  ",
            f"Steady-state round (median): {steady['3']:.2f} s with DP, {steady['inf']:.2f} s "
            f"without ({steady['3'] / steady['inf']:.2f}x); start-up and release are the same "
            "work on both sides.", *_round_breakdown(schema, sites)]


def _round_breakdown(schema_path: Path, paths: list[Path], repeats: int = 3) -> list[str]:
    """Where a round's extra time goes: the sites' local training alone, in this process
    (no Flower), with DP and without, and the two costs only DP pays."""
    schema = parse_schema(schema_path.read_text())
    sites = [load_site(path, schema) for path in paths]
    seconds: dict[float, list[float]] = {3.0: [], math.inf: []}
    for repeat in range(repeats):
        for eps in (3.0, math.inf) if repeat % 2 == 0 else (math.inf, 3.0):
            plan = StudyPlan(epsilon=eps)
            privacy = dpsgd_privacy(plan)
            start = time.perf_counter()
            for site in sites:
                model = build_generator(site.encoding, plan.hidden, plan.latent, 0)
                train_round(model, site.encoded, plan, privacy, repeat * plan.local_steps)
            seconds[eps].append(time.perf_counter() - start)
    plan = StudyPlan()
    accounting = len(sites) * _median_seconds(lambda: dpsgd_epsilon(plan, plan.local_steps), 20)
    model = build_generator(sites[0].encoding, plan.hidden, plan.latent, 0)
    shapes = [tuple(p.shape) for p in model.parameters()]
    std = plan.max_grad_norm * dpsgd_privacy(plan).noise_multiplier
    extra_noise = len(sites) * plan.local_steps * (
        _median_seconds(lambda: [secure_normal(shape, std) for shape in shapes], 100)
        - _median_seconds(lambda: [torch.normal(0.0, std, size=shape) for shape in shapes], 100))
    dp, ref = statistics.median(seconds[3.0]), statistics.median(seconds[math.inf])
    return [f"\nOne round of the {len(sites)} sites' local training (`train_round`, "
            f"{plan.local_steps} steps each) in one process, without Flower, median of "
            f"{repeats}; the engine runs {_engine_cpus()} sites at a time:\n",
            "| | s per round |", "|---|---|",
            f"| ε = 3: ghost clipping + CSPRNG noise + accounting | {dp:.3f} |",
            f"| … of which CSPRNG noise beyond what torch's generator would cost "
            f"({len(sites) * plan.local_steps} draws) | {extra_noise:.3f} |",
            f"| … of which accounting (each site's ε after the round, RDP over "
            f"{len(RDP_ORDERS)} orders) | {accounting:.3f} |",
            f"| ε = inf: same sampling and Adam, no clipping or noise | {ref:.3f} |"]


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _engine_cpus() -> int:
    return loopback_backend_config()["init_args"]["num_cpus"]


def _round_times(lines: list[tuple[float, str]], wall: float) -> tuple[float, float, float]:
    """(time to the round-1 line, seconds per later round, time after the last round)."""
    rounds = [t for t, line in lines if re.match(r"round \d+/", line)]
    first, last = rounds[0], rounds[-1]
    return first, (last - first) / max(1, len(rounds) - 1), wall - last


def _demo(folder: Path) -> list[str]:
    wall, lines, peak = _run_cli(["demo", "--out", str(folder / "demo-run")])
    rounds = [(t, line) for t, line in lines if re.match(r"round \d+/", line)]
    first, last = rounds[0][0], rounds[-1][0]
    per_round = (last - first) / max(1, len(rounds) - 1)
    released = next(t for t, line in lines if line.startswith("released "))
    evaluated = next((t for t, line in lines if line.startswith("federated evaluation")), released)
    imports = _time_python("import simulation.cli")
    ray_start = _time_python("import ray; ray.init(_node_ip_address='127.0.0.1', "
                             "include_dashboard=False, log_to_driver=False); ray.shutdown()")
    return ["\n## 3. The demo, start-up included",
            f"`fedsynth-coordinator demo`: **{wall:.1f} s** wall (target ≤ 60 s), "
            f"peak memory of the process tree {peak / 2**20:.0f} MiB.\n",
            "| phase | s |", "|---|---|",
            f"| start-up: imports, registry + CSVs, input checks, Ray start, round 1 | {first:.1f} |",
            f"| … of which importing torch, Opacus, Flower, fedsynth (measured alone) | {imports:.1f} |",
            f"| … of which starting and stopping Ray on loopback (measured alone) | {ray_start:.1f} |",
            f"| rounds 2–{len(rounds)}: {per_round:.2f} s each | {last - first:.1f} |",
            f"| sampling, decoding, writing cohort + manifest | {released - last:.1f} |",
            f"| federated evaluation (ε {DEMO_EVALUATION_EPSILON:g} of the study's, noisy tables "
            f"at each site) | {evaluated - released:.1f} |",
            f"| engine shutdown, local report with figures | {wall - evaluated:.1f} |"]


def _time_python(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _fifty_sites(folder: Path, quick: bool, which: str = "both") -> list[str]:
    paths, schema = [], None
    seed = 0
    while len(paths) < 50:
        schema, batch = _write_registry(folder / f"fifty-{seed}", n_sites=12, seed=seed)
        for path in batch[: 50 - len(paths)]:
            renamed = path.with_name(f"s{seed:02d}-{path.name}")
            path.rename(renamed)
            paths.append(renamed)
        seed += 1
    extra = ["--rounds", "2"] if quick else []
    lines = ["\n## 4. Fifty sites in one study",
             "50 simulated sites (12-hospital registries, 40–400 patients each); peak memory "
             "is the coordinator's and all Ray workers' together.\n",
             "| generator, aggregation | rounds | wall s | peak memory MiB |", "|---|---|---|---|"]
    runs = (("vae, plain FedAvg", ["--generator", "vae", *extra]),
            ("marginals, SecAgg+ (min-sites 50, 1 colluder; each site adds a share of the "
             "noise)", ["--generator", "marginals", "--secure-aggregation", "--min-sites", "50",
                        "--colluders", "1"]))
    for label, flags in runs:
        if which not in ("both", flags[1]):
            continue
        out = folder / f"fifty-{flags[1]}"
        wall, printed, peak = _run_cli(_simulate_args(schema, paths, out, *flags))
        rounds = sum(1 for _, line in printed if re.match(r"round \d+/", line))
        lines.append(f"| {label} | {rounds} | **{wall:.1f}** | **{peak / 2**20:.0f}** |")
    return lines


def _sampling_and_upload(schema_path: Path, sites: list[Path], rows: int = 500_000) -> list[str]:
    schema = parse_schema(schema_path.read_text())
    plan = StudyPlan(generator="vae").with_overrides(rows=rows)
    model = build_generator(build_encoding(schema), plan.hidden, plan.latent, 0)
    arrays = {name: value.numpy() for name, value in model.state_dict().items()}
    start = time.perf_counter()
    cohort = family_for(plan).sample(schema, plan, arrays, lambda _: arrays)
    rate = len(cohort) / (time.perf_counter() - start)
    record = ArrayRecord(model.state_dict())
    payload = sum(len(array.data) for array in record.values())
    params = sum(p.numel() for p in model.parameters())
    return ["\n## 5. Sampling and upload",
            f"VAE: sampling + decoding {rows:,} rows: **{rate:,.0f} rows/s** (target ≥ "
            "200,000).  ",
            f"Upload per site per round: **{payload / 1024:.1f} KiB** of weights "
            f"({params:,} float32 parameters as serialised by Flower) plus "
            f"{len(messages.REPLY_METRICS)} scalars and the site name (target ≤ 1 MB).",
            *_marginals_sampling(schema, sites, rows)]


def _marginals_sampling(schema, sites: list[Path], rows: int) -> list[str]:
    """The marginals family on the sites' exact pooled tables (the model's size and so its
    cost do not depend on the noise): fitting its graphical model once, then sampling."""
    family = FAMILIES["marginals"]
    plan = StudyPlan(generator="marginals", rounds=family.default_rounds).with_overrides(rows=rows)
    records = pd.concat([load_site(path, schema).parsed for path in sites], ignore_index=True)
    plain = build_layout(schema)
    staged = plain.with_groups(plain.column_counts(records))
    tables = staged.counts(records)
    start = time.perf_counter()
    model = fit_model(staged, tables)
    fitted = time.perf_counter()
    cohort = sample_model(model, rows, 0)
    sampled = time.perf_counter()
    record = ArrayRecord({name: torch.from_numpy(np.asarray(value)) for name, value in tables.items()})
    payload = sum(len(array.data) for array in record.values())
    cells = sum(array.size for array in family.global_arrays(schema, plan).values())
    return [f"\nMarginals: fitting the graphical model ({len(model.pairs)} pairs, "
            f"{sum(d.size for d in model.distributions):,} cells) **{fitted - start:.1f} s** "
            f"(once per study); sampling + decoding {len(cohort):,} rows: "
            f"**{len(cohort) / (sampled - fitted):,.0f} rows/s** (target ≥ 200,000).  ",
            f"Upload per site per round: **{payload / 1024:.1f} KiB** ({cells:,} table cells as "
            f"float64, as serialised by Flower), {family.default_rounds} rounds."]


if __name__ == "__main__":
    main()
