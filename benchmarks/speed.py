"""Speed and memory of fedsynth, measured in one run on this machine.

    python benchmarks/speed.py [--quick] [--results benchmarks/SPEED.md]

Prints (and writes to SPEED.md) every figure issue 4 asks for, each measured
here, now, side by side:
1. DP-SGD step throughput on one site: no DP, Opacus per-sample hooks, and the
   ghost clipping that nodes use.
2. A whole study with DP vs the same study with `--epsilon inf` (same sites,
   plan and rows), each as a real `fedsynth-coordinator simulate` process.
3. The demo (6 hospitals) end to end, start-up included, with where the time goes.
4. A study with 50 simulated sites in one go, with the peak memory of the whole
   process tree (coordinator + Ray workers).
5. Cohort sampling speed (rows/s) and the bytes each site uploads per round.
`--quick` shrinks the 50-site study to 2 rounds (for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil
import torch
from flwr.app import ArrayRecord
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer

from coordinator.cohort import sample_cohort
from node.site_data import load_site
from node.training import SitePrivacy, dp_setup, train_step
from protocols.demo_registry import simulate_registry
from protocols.encoding import build_encoding
from protocols.generator import build_generator, per_record_loss
from protocols.plan import StudyPlan
from protocols.schema import parse_schema

ROOT = Path(__file__).resolve().parents[1]


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
        sections = (lambda: _step_throughput(schema_path, sites),
                    lambda: _study_ratio(schema_path, sites, folder),
                    lambda: _demo(folder), lambda: _fifty_sites(folder, args.quick),
                    lambda: _sampling_and_upload(schema_path))
        for measure in sections:
            section = measure()
            print("\n".join(section), flush=True)
            lines += section
    args.results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.results}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
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


def _step_throughput(schema_path: Path, sites: list[Path], steps: int = 300) -> list[str]:
    schema = parse_schema(schema_path.read_text())
    site = load_site(sites[-1], schema)
    plan = StudyPlan()
    privacy = SitePrivacy.for_site(plan, site.n_records, site.name)
    data = torch.as_tensor(site.encoded)
    rates = {name: steps / _time_steps(kind, site, plan, privacy, data, steps)
             for name, kind in (("no DP", "plain"), ("Opacus per-sample hooks", "hooks"),
                                ("ghost clipping (used)", "ghost"))}
    base = rates["no DP"]
    rows = [f"| {name} | {rate:.0f} | {base / rate:.2f}x |" for name, rate in rates.items()]
    return ["\n## 1. DP-SGD steps on one site",
            f"{site.n_records} records, batch {plan.batch_size} (Poisson), hidden {plan.hidden}, "
            f"{steps} steps, 1 thread.\n",
            "| path | steps/s | cost vs no DP |", "|---|---|---|", *rows]


def _time_steps(kind, site, plan, privacy, data, steps) -> float:
    model = build_generator(site.encoding, plan.hidden, plan.latent, 0)
    rate = privacy.sample_rate
    if kind == "ghost":
        module, optimizer, _ = dp_setup(model, plan, privacy, data, 0, torch.Generator())
    elif kind == "hooks":
        module = GradSampleModule(model)
        optimizer = DPOptimizer(torch.optim.Adam(module.parameters(), lr=plan.learning_rate),
                                noise_multiplier=privacy.noise_multiplier, max_grad_norm=1.0,
                                expected_batch_size=round(rate * len(data)))
    else:
        module, optimizer = model, torch.optim.Adam(model.parameters(), lr=plan.learning_rate)
    start = time.perf_counter()
    for _ in range(steps):
        batch = data[torch.rand(len(data)) < rate]
        if kind == "hooks":
            optimizer.zero_grad()
            out, mu, logvar = module(batch)
            per_record_loss(model.encoding, batch, out, mu, logvar).mean().backward()
            optimizer.step()
        else:
            train_step(module, optimizer, model, batch, private=kind == "ghost")
    return time.perf_counter() - start


def _run_cli(args: list[str]) -> tuple[float, list[tuple[float, str]], int]:
    """Run a fedsynth CLI; return wall time, timestamped stdout lines and peak tree RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], cwd=ROOT,
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
    dp, _, _ = _run_cli(_simulate_args(schema, sites, folder / "dp", "--epsilon", "3"))
    ref, _, _ = _run_cli(_simulate_args(schema, sites, folder / "ref", "--epsilon", "inf"))
    return ["\n## 2. A DP study vs the same study without DP",
            f"{len(sites)} sites, default plan ({StudyPlan().rounds} rounds × "
            f"{StudyPlan().local_steps} steps), {StudyPlan().rows} rows, real simulation engine.\n",
            "| study | wall s |", "|---|---|", f"| ε = 3 per site | {dp:.1f} |",
            f"| ε = inf (no DP) | {ref:.1f} |", f"\n**DP / non-DP wall time: {dp / ref:.2f}x** "
            "(target ≤ 1.5x)"]


def _demo(folder: Path) -> list[str]:
    wall, lines, peak = _run_cli(["demo", "--out", str(folder / "demo-run")])
    rounds = [(t, line) for t, line in lines if re.match(r"round \d+/", line)]
    first, last = rounds[0][0], rounds[-1][0]
    per_round = (last - first) / max(1, len(rounds) - 1)
    imports = _time_python("import coordinator.cli, coordinator.simulation")
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
            f"| sampling, decoding, writing cohort + manifest, engine shutdown | {wall - last:.1f} |"]


def _time_python(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _fifty_sites(folder: Path, quick: bool) -> list[str]:
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
    wall, lines, peak = _run_cli(_simulate_args(schema, paths, folder / "fifty", *extra))
    rounds = sum(1 for _, line in lines if re.match(r"round \d+/", line))
    return ["\n## 4. Fifty sites in one study",
            f"50 simulated sites (12-hospital registries, 40–400 patients each), {rounds} rounds: "
            f"**{wall:.1f} s** wall, **peak memory {peak / 2**20:.0f} MiB** for the coordinator "
            "and all Ray workers together."]


def _sampling_and_upload(schema_path: Path, rows: int = 500_000) -> list[str]:
    schema = parse_schema(schema_path.read_text())
    plan = StudyPlan()
    model = build_generator(build_encoding(schema), plan.hidden, plan.latent, 0)
    start = time.perf_counter()
    cohort = sample_cohort(model, rows, seed=1)
    rate = len(cohort) / (time.perf_counter() - start)
    record = ArrayRecord(model.state_dict())
    payload = sum(len(array.data) for array in record.values())
    params = sum(p.numel() for p in model.parameters())
    return ["\n## 5. Sampling and upload",
            f"Sampling + decoding {rows:,} rows: **{rate:,.0f} rows/s** (target ≥ 200,000).  ",
            f"Upload per site per round: **{payload / 1024:.1f} KiB** of weights "
            f"({params:,} float32 parameters as serialised by Flower) plus 4 scalars and the site "
            "name (target ≤ 1 MB)."]


if __name__ == "__main__":
    main()
