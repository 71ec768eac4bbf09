"""An empirical privacy audit of what a node releases: a lower bound on ε per mechanism.

    python benchmarks/privacy_audit.py [--trials N] [--epsilon E] [--evaluation-epsilon EE]
        [--mechanisms marginals vae evaluation] [--old-code PATH [--old-trials N]]
        [--results benchmarks/AUDIT.md]

The distinguishing game of Jagielski, Ullman & Oprea ("Auditing differentially
private machine learning: how private is private SGD?", NeurIPS 2020) and Nasr,
Song, Thakurta, Papernot & Carlini ("Adversary instantiation: lower bounds for
differentially private machine learning", IEEE S&P 2021). D is a site's records
(the demo registry's hospital-01, 40 patients), D' = D plus one canary record
(add/remove neighbours, the neighbouring the guarantee is stated for). For each
mechanism the real node, the ClientApp a SuperNode runs, with real files and a
fresh privacy ledger per trial, answers the same messages `--trials` times on
D and on D'; a scalar statistic is computed from what leaves the node (the
reply's arrays), larger when the canary is in. For a test "say D' when the
statistic exceeds t", (ε, δ)-DP bounds its false-positive rate FPR = P_D(s > t)
and false-negative rate FNR = P_D'(s ≤ t) by FPR + e^ε·FNR ≥ 1 − δ and
FNR + e^ε·FPR ≥ 1 − δ (Kairouz, Oh & Viswanath, ICML 2015), so

    ε ≥ ε_lb = max( log((1 − δ − FNR_ub) / FPR_ub),  log((1 − δ − FPR_ub) / FNR_ub) )

where FPR_ub and FNR_ub are one-sided Clopper–Pearson upper bounds (Clopper &
Pearson, Biometrika 1934; scipy's beta quantiles), each at level 1 − α/2, so
that both hold together with probability at least 1 − α = 95 % (Bonferroni).
The threshold t (and the side of the test) is chosen on the even-numbered
trials, maximising the same bound there, and ε_lb is computed on the
odd-numbered trials alone, which the choice never saw: the 95 % holds for the
reported figure without any correction for the search. A bound above the
claimed ε is a VIOLATION: with 95 % confidence, the mechanism is not (ε, δ)-DP.

`--old-code PATH` adds the federated evaluation of another checkout (the
pre-fix commit 14797a3, before the evaluation became a DP release), driven by
its own message format in a subprocess whose PYTHONPATH is that tree, so none
of its modules mix with this one's. Its claimed ε is 0: the scores it returned
were outside every stated ε.

Defaults (800 trials per world, ε = 3, evaluation ε = 2) take about 6 minutes on
two shared cores, one torch thread; the old code's 100 trials per world about 3
more (it scored every cohort in full). Trial folders go to /dev/shm where there
is one: the node fsyncs its ledger every round, and the disk is not audited.
The latest output is `benchmarks/AUDIT.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from scipy.stats import beta

# The current tree's modules (node, protocols, coordinator) are imported inside
# the functions that audit it: the --old-code worker runs this same file under the old
# tree's PYTHONPATH and must load that tree's ClientApp and nothing of this one.
if TYPE_CHECKING:
    from protocols.plan import StudyPlan
    from protocols.schema import Schema

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05  # 1 − confidence of every bound, split over FPR and FNR (Bonferroni)
DEFAULT_TRIALS = 800  # per world: 2 x 800 node calls of ~0.1 s CPU per mechanism
OLD_CODE_TRIALS = 100  # the old node scored every cohort in full: ~1 s a call
SITE = "hospital-01"
# One patient who is valid under the demo schema and sits in rare cells of every
# table: extreme ages, values and dates (no hospital-01 record shares them).
CANARY = {"patient_id": "AUDIT-CANARY", "age_at_diagnosis": 90, "sex": "male",
          "subtype": "atypical", "genotype": "splice", "diagnosis_date": "2025-12-31",
          "bmi": 60.0, "serum_marker": 500.0, "treated": True, "ecog": 4,
          "survival_months": 312.0, "death": False}
CROWD_ROWS = 4  # finding 3's crafted "cohort": the canary, four times
VAE_STEPS = 8  # a small DP-SGD plan so that a trial takes ~0.1 s
GRADIENT_DRAWS = 256  # latent draws the canary's expected gradient is averaged over

Trial = Callable[[bool, Path], float]  # (canary in?, a fresh state dir) -> statistic


# ---------------------------------------------------------------- the bound (pure)

def rate_upper_bound(errors: np.ndarray | int, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on an error rate at level 1 − alpha
    (the (1 − alpha) quantile of Beta(k + 1, n − k); 1 when every trial erred)."""
    k = np.asarray(errors, dtype=float)
    safe = np.minimum(k, trials - 1)
    upper = beta.ppf(1.0 - alpha, safe + 1, trials - safe)
    return np.where(k >= trials, 1.0, upper)


def epsilon_from_rates(fpr_ub: np.ndarray, fnr_ub: np.ndarray, delta: float) -> np.ndarray:
    """ε_lb of the module docstring from upper bounds on FPR and FNR (0 when neither
    inequality binds)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log(np.clip(1.0 - delta - fnr_ub, 0.0, None) / fpr_ub)
        two = np.log(np.clip(1.0 - delta - fpr_ub, 0.0, None) / fnr_ub)
    return np.maximum(0.0, np.nan_to_num(np.maximum(one, two), nan=0.0, neginf=0.0))


def threshold_bounds(without: np.ndarray, with_: np.ndarray, thresholds: np.ndarray,
                     side: int, delta: float, alpha: float) -> np.ndarray:
    """ε_lb of every test "D' when side·s > side·t" on the given trials."""
    a, b = np.sort(side * without), np.sort(side * with_)
    cut = side * thresholds
    false_pos = len(a) - np.searchsorted(a, cut, side="right")
    false_neg = np.searchsorted(b, cut, side="right")
    return epsilon_from_rates(rate_upper_bound(false_pos, len(a), alpha / 2),
                              rate_upper_bound(false_neg, len(b), alpha / 2), delta)


def audit_bound(without: np.ndarray, with_: np.ndarray, delta: float,
                alpha: float = ALPHA) -> float:
    """ε_lb at confidence 1 − alpha: the test chosen on the even trials, bounded on the
    odd ones (independent of the choice, so no correction for the search is needed)."""
    pick_0, pick_1 = without[0::2], with_[0::2]
    values = np.unique(np.concatenate([pick_0, pick_1]))
    thresholds = np.concatenate([values[:1] - 1.0, (values[1:] + values[:-1]) / 2])
    best = max(((side, t, bound) for side in (1, -1) for t, bound in zip(
        thresholds, threshold_bounds(pick_0, pick_1, thresholds, side, delta, alpha))),
        key=lambda choice: choice[2])
    side, threshold = best[0], np.array([best[1]])
    return float(threshold_bounds(without[1::2], with_[1::2], threshold, side, delta,
                                  alpha)[0])


def bound_ceiling(trials: int, delta: float, alpha: float = ALPHA) -> float:
    """The largest ε_lb `trials` trials per world can certify: a test that never errs
    on the held-out half."""
    held_out = trials // 2
    never = rate_upper_bound(0, held_out, alpha / 2)
    return float(epsilon_from_rates(never, never, delta))


# ---------------------------------------------------------------- one audited mechanism

@dataclass(frozen=True)
class AuditRow:
    """One line of the table: a mechanism, its claim and what the audit certified."""

    mechanism: str
    claimed: float
    delta: float
    trials: int
    statistic: str
    bound: float
    ceiling: float
    seconds: float

    @property
    def verdict(self) -> str:
        return "VIOLATION" if self.bound > self.claimed else "below claim"


def run_trials(trial: Trial, trials: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The statistic of `trials` runs on D and on D', interleaved, each run with a
    state dir of its own (a node's ledger refuses a study it has already joined)."""
    values: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(trials):
        for with_canary in (False, True):
            with tempfile.TemporaryDirectory(dir=folder) as state:
                values[with_canary].append(trial(with_canary, Path(state) / "node-state"))
    return np.asarray(values[False]), np.asarray(values[True])


def audited(mechanism: str, claimed: float, delta: float, statistic: str,
            outcomes: Callable[[], tuple[np.ndarray, np.ndarray]]) -> AuditRow:
    """Run a game and turn its outcomes into a row."""
    start = time.perf_counter()
    without, with_ = outcomes()
    return AuditRow(mechanism, claimed, delta, len(without), statistic,
                    audit_bound(without, with_, delta), bound_ceiling(len(without), delta),
                    time.perf_counter() - start)


# ---------------------------------------------------------------- the node, as Flower calls it

def as_flower_task() -> None:
    """Flower stamps every message with the running task's identity, which its engines
    set; calling a ClientApp in-process, the caller sets it (as the node tests do)."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def released(reply: Message, record: str) -> dict[str, np.ndarray]:
    """The arrays of one record of a node's reply: what left the node."""
    return {name: array.numpy() for name, array in reply.content[record].items()}


def cell_statistic(tables: Mapping[str, np.ndarray], without: Mapping[str, np.ndarray],
                   canary: Mapping[str, np.ndarray], sigma: Mapping[str, float]) -> float:
    """Σ_t (y_t[c_t] − n_t[c_t]) / σ_t² over the tables t of a release, c_t the canary's
    cell, n_t D's exact count there. The canary adds one count to c_t of every table; under
    independent (discrete) Gaussian noise of σ_t the log likelihood ratio of D' against D
    is this sum up to a constant, so thresholding it is the most powerful test
    (Neyman–Pearson)."""
    total = 0.0
    for name, one_hot in canary.items():
        cell = np.unravel_index(int(np.argmax(one_hot)), one_hot.shape)
        total += (tables[name][cell] - without[name][cell]) / sigma[name] ** 2
    return total


@dataclass(frozen=True)
class Worlds:
    """Two neighbouring sites on disk (D, and D' = D plus the canary), the crafted
    cohort of finding 3, and what an auditor knows: D and the canary, parsed as a node
    parses them."""

    schema: Schema
    schema_path: Path
    data: Mapping[bool, Path]  # canary in? -> the site's CSV
    parsed: pd.DataFrame
    canary: pd.DataFrame
    cohort_path: Path


def node_context(schema_path: Path, data: Path, state_dir: Path, **node_config: Any) -> Context:
    """A deployed node's context: its schema, its records and a ledger folder of its own
    (the keys the old node read; the current one also wants `delta-budget`)."""
    return Context(run_id=1, node_id=1, node_config={
        "schema-path": str(schema_path), "data-path": str(data), "state-dir": str(state_dir),
        "epsilon-budget": 100.0, **node_config}, state=RecordDict(), run_config={})


def site_context(worlds: Worlds, with_canary: bool, state_dir: Path, **node_config: Any
                 ) -> Context:
    """The current node's context on D or D'."""
    return node_context(worlds.schema_path, worlds.data[with_canary], state_dir,
                        **{"delta-budget": 1e-3, **node_config})


def write_worlds(folder: Path) -> Worlds:
    """The demo registry's hospital-01 (40 patients) with and without the canary."""
    from protocols.demo_registry import simulate_registry
    from protocols.release.manifest import CSV_NAME
    from protocols.schema import parse_schema
    registry = simulate_registry()
    schema = parse_schema(registry.schema_yaml, source="demo-schema.yaml")
    (folder / "schema.yaml").write_text(registry.schema_yaml)
    site, canary = registry.sites[SITE], pd.DataFrame([CANARY])
    data = {False: folder / "site-D" / "hospital.csv",
            True: folder / "site-D-prime" / "hospital.csv"}
    cohort_path = folder / "release" / CSV_NAME
    frames = {data[False]: site, data[True]: pd.concat([site, canary], ignore_index=True),
              cohort_path: pd.concat([canary] * CROWD_ROWS, ignore_index=True)}
    for path, frame in frames.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    return Worlds(schema, folder / "schema.yaml", data, parse_file(data[False], schema),
                  parse_file(data[True], schema).iloc[[-1]].reset_index(drop=True), cohort_path)


def parse_file(path: Path, schema: Schema) -> pd.DataFrame:
    """Records as the node reads and validates them (identifiers dropped)."""
    from protocols.records import drop_identifiers, read_table, validate_records
    validation = validate_records(drop_identifiers(read_table(path), schema), schema, str(path))
    validation.raise_if_invalid()
    return validation.parsed


def train_message(schema: Schema, plan: StudyPlan, arrays: ArrayRecord | None, server_round: int
                  ) -> Message:
    """A training message as the coordinator sends it (the plan's initial arrays unless
    `arrays` are given)."""
    from coordinator.server_app import initial_arrays
    from protocols import messages as keys
    config = ConfigRecord({**plan.to_config(), keys.SCHEMA_SHA256: schema.sha256,
                           keys.SERVER_ROUND: server_round})
    arrays = initial_arrays(schema, plan) if arrays is None else arrays
    content = RecordDict({keys.ARRAYS: arrays,
                          keys.PLAN: config})
    return Message(content=content, dst_node_id=1, message_type="train")


# ---------------------------------------------------------------- 1. marginals

def marginals_trial(worlds: Worlds, plan: StudyPlan) -> Trial:
    """Both stages of the release (round 2 gets the site's own stage-1 tables back, as
    the average of a one-site federation); the statistic sums the canary's cells of the
    column tables (σ₁) and of the pair tables on the stage-2 bins (σ₂), which an auditor
    recomputes from the released stage-1 tables."""
    from node.client_app import build_client_app
    from protocols import messages as keys
    from protocols.count_tables import build_layout
    from protocols.generators.marginals.tables import (noise_scales, site_noise_multiplier,
                                                       table_counts)
    app, schema, layout = build_client_app(), worlds.schema, build_layout(worlds.schema)
    noise = site_noise_multiplier(plan, *table_counts(layout))
    sigma_one, sigma_two = noise_scales(layout, noise)

    def trial(with_canary: bool, state_dir: Path) -> float:
        context = site_context(worlds, with_canary, state_dir)
        first = app(train_message(schema, plan, None, 1), context)
        second = app(train_message(schema, plan, first.content[keys.ARRAYS], 2), context)
        ones, twos = released(first, keys.ARRAYS), released(second, keys.ARRAYS)
        staged = layout.with_groups({k: v for k, v in ones.items() if k.startswith("1|")})
        stage_one = cell_statistic(ones, layout.column_counts(worlds.parsed),
                                   layout.column_counts(worlds.canary),
                                   dict.fromkeys(ones, sigma_one))
        return stage_one + cell_statistic(twos, staged.pair_counts(worlds.parsed),
                                          staged.pair_counts(worlds.canary),
                                          dict.fromkeys(twos, sigma_two))
    return trial


# ---------------------------------------------------------------- 2. vae (DP-SGD)

def canary_direction(worlds: Worlds, plan: StudyPlan) -> dict[str, np.ndarray]:
    """The unit vector of the canary's expected loss gradient at the plan's initial model
    (public: a function of the plan's seed), averaged over latent draws. DP-SGD adds the
    canary's clipped gradient to every step's sum, so its presence moves the released
    weights along minus this direction."""
    import torch
    from protocols.encoding import build_encoding
    from protocols.generators.vae.model import build_generator, per_record_loss
    encoding = build_encoding(worlds.schema)
    model = build_generator(encoding, plan.hidden, plan.latent, plan.seed)
    x = torch.as_tensor(encoding.encode(worlds.canary)).repeat(GRADIENT_DRAWS, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        per_record_loss(encoding, x, *model(x)).mean().backward()
    grads = {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    return {name: g / norm for name, g in grads.items()}


def vae_trial(worlds: Worlds, plan: StudyPlan) -> Trial:
    """One DP-SGD round on D or D'; the statistic is how far the released weights moved
    against the canary's gradient, −⟨θ_released − θ_initial, ĝ_canary⟩."""
    from coordinator.server_app import initial_arrays
    from node.client_app import build_client_app
    from protocols import messages as keys
    app, initial = build_client_app(), initial_arrays(worlds.schema, plan)
    start = {k: v.numpy() for k, v in initial.to_torch_state_dict().items()}
    direction = canary_direction(worlds, plan)

    def trial(with_canary: bool, state_dir: Path) -> float:
        context = site_context(worlds, with_canary, state_dir)
        weights = released(app(train_message(worlds.schema, plan, initial, 1), context),
                           keys.ARRAYS)
        return -sum(float(np.sum((weights[k] - start[k]) * g)) for k, g in direction.items())
    return trial


# ---------------------------------------------------------------- 3. federated evaluation

def signed_release(worlds: Worlds, plan: StudyPlan, folder: Path) -> tuple[bytes, bytes, Path]:
    """The crafted cohort with a manifest for the study, signed by a consortium key the
    node trusts (a coordinator holds that key, so it can sign what it likes); returns
    the cohort's bytes, the manifest's and the public key's path."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from protocols.release.manifest import CSV_NAME, build_manifest, render_manifest
    from protocols.release.signing import public_key_pem, sign_manifest
    key = Ed25519PrivateKey.generate()
    public = folder / "manifest-signing.pub"
    public.write_text(public_key_pem(key.public_key()))
    manifest = build_manifest(schema_sha256=worlds.schema.sha256, plan=plan, sites={},
                              contributions={}, engine="simulation", tls=False,
                              files={CSV_NAME: worlds.cohort_path}, rows=CROWD_ROWS)
    signed = render_manifest(sign_manifest(manifest, key)).encode()
    return worlds.cohort_path.read_bytes(), signed, public


def evaluation_trial(worlds: Worlds, plan: StudyPlan, folder: Path) -> Trial:
    """A study round (so the site took part), then the evaluation of the signed crafted
    cohort; the statistic sums the canary's cells of the released evaluation tables."""
    from node.client_app import build_client_app
    from protocols import messages as keys
    from protocols.evaluation.release import cell_sigmas, evaluation_layout
    app, layout = build_client_app(), evaluation_layout(worlds.schema)
    cohort_csv, manifest, public = signed_release(worlds, plan, folder)
    cohort = parse_file(worlds.cohort_path, worlds.schema)
    without, canary = layout.counts(worlds.parsed, cohort), layout.counts(worlds.canary, cohort)
    sigmas = cell_sigmas(layout, plan)
    evaluate = RecordDict({
        keys.COHORT: ConfigRecord({keys.COHORT_CSV: cohort_csv, keys.COHORT_MANIFEST: manifest}),
        keys.PLAN: ConfigRecord({**plan.to_config(), keys.SCHEMA_SHA256: worlds.schema.sha256})})

    def trial(with_canary: bool, state_dir: Path) -> float:
        context = site_context(worlds, with_canary, state_dir,
                               **{"manifest-public-key": str(public)})
        app(train_message(worlds.schema, plan, None, 1), context)
        reply = app(Message(content=evaluate, dst_node_id=1, message_type="evaluate"), context)
        return cell_statistic(released(reply, keys.EVALUATION_TABLES), without, canary, sigmas)
    return trial


# ---------------------------------------------------------------- 4. the old code's evaluation

def old_code_outcomes(worlds: Worlds, tree: Path, trials: int, folder: Path
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Finding 3's game against another checkout's ClientApp, run by this file as a
    worker (`--old-worker`) in a subprocess whose PYTHONPATH is that tree."""
    spec = {"tree": str(tree.resolve()), "schema_path": str(worlds.schema_path),
            "schema_sha256": worlds.schema.sha256, "cohort": str(worlds.cohort_path),
            "data": {"without": str(worlds.data[False]), "with": str(worlds.data[True])},
            "trials": trials, "folder": str(folder), "out": str(folder / "outcomes.json")}
    (folder / "spec.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--old-worker",
                    str(folder / "spec.json")], check=True,
                   env={**os.environ, "PYTHONPATH": str(tree.resolve())})
    outcomes = json.loads((folder / "outcomes.json").read_text())
    return np.asarray(outcomes["without"]), np.asarray(outcomes["with"])


def old_worker(spec_path: Path) -> None:
    """(In the subprocess.) Send the old evaluate message as its coordinator did, the
    crafted cohort's CSV bytes under `cohort.csv` and the schema hash under
    `config.schema-sha256`, and read `scores.exact_copy_share` from the reply. Only the
    message format is assumed, nothing of the old tree's internals beyond its front
    door, `node.client_app.build_client_app`."""
    spec = json.loads(spec_path.read_text())
    import node.client_app as old_node  # from the old tree: PYTHONPATH comes first
    for name in ("node", "protocols"):
        loaded = Path(sys.modules[name].__file__).resolve()
        if not loaded.is_relative_to(spec["tree"]):
            raise SystemExit(f"the old-code worker loaded {loaded}, not {spec['tree']}")
    as_flower_task()
    app, cohort = old_node.build_client_app(), Path(spec["cohort"]).read_bytes()
    content = RecordDict({"cohort": ConfigRecord({"csv": cohort}),
                          "config": ConfigRecord({"schema-sha256": spec["schema_sha256"]})})

    def trial(with_canary: bool, state_dir: Path) -> float:
        data = spec["data"]["with" if with_canary else "without"]
        context = node_context(Path(spec["schema_path"]), Path(data), state_dir)
        reply = app(Message(content=content, dst_node_id=1, message_type="evaluate"), context)
        return float(reply.content["scores"]["exact_copy_share"])
    without, with_ = run_trials(trial, spec["trials"], Path(spec["folder"]))
    Path(spec["out"]).write_text(json.dumps({"without": without.tolist(),
                                             "with": with_.tolist()}))


# ---------------------------------------------------------------- the audit and its report

@dataclass(frozen=True)
class Game:
    """One mechanism to audit: what it claims, the statistic, and how to play it."""

    mechanism: str
    claimed: float
    statistic: str
    outcomes: Callable[[], tuple[np.ndarray, np.ndarray]]


def games(args: argparse.Namespace, worlds: Worlds, folder: Path) -> dict[str, Game]:
    """The games of the current tree (and of `--old-code`), keyed as `--mechanisms` names
    them. Each plan is the smallest that runs the mechanism; ε and δ are the plan's."""
    from protocols.plan import StudyPlan
    e, ee = args.epsilon, args.evaluation_epsilon
    marginals = StudyPlan(generator="marginals", rounds=2, epsilon=e)
    vae = StudyPlan(epsilon=e, rounds=1, local_steps=VAE_STEPS, sample_rate=1.0, hidden=8,
                    latent=2)
    evaluation = StudyPlan(generator="marginals", rounds=2, epsilon=e, evaluation_epsilon=ee)
    n = args.trials
    found = {
        "marginals": Game("marginals, both stages", e, "canary cells / σ², both stages",
                          lambda: run_trials(marginals_trial(worlds, marginals), n, folder)),
        "vae": Game(f"vae, DP-SGD ({VAE_STEPS} steps, q = 1)", e,
                    "−⟨Δθ, canary gradient at θ₀⟩",
                    lambda: run_trials(vae_trial(worlds, vae), n, folder)),
        "evaluation": Game("federated evaluation, signed crafted cohort", ee,
                           "canary cells / σ², evaluation tables",
                           lambda: run_trials(evaluation_trial(worlds, evaluation, folder), n,
                                              folder))}
    if args.old_code:
        found["old"] = Game(f"old evaluation ({commit_of(args.old_code)}, finding 3)", 0.0,
                            "exact_copy_share of the reply",
                            lambda: old_code_outcomes(worlds, args.old_code, args.old_trials,
                                                      folder))
    return found


def audit(args: argparse.Namespace, folder: Path) -> list[AuditRow]:
    """Every requested game on the same two worlds, each row printed as it is done."""
    from protocols.plan import StudyPlan
    worlds, delta, rows = write_worlds(folder), StudyPlan().delta, []
    chosen = games(args, worlds, folder)
    for name in [*args.mechanisms, *(["old"] if args.old_code else [])]:
        game = chosen[name]
        rows.append(audited(game.mechanism, game.claimed, delta, game.statistic,
                            game.outcomes))
        print(table([rows[-1]])[-1], flush=True)
    return rows


def commit_of(tree: Path) -> str:
    """`tree`'s short commit, and whether its files differ from it."""
    def git(*command: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *command], capture_output=True,
                              text=True, check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or str(tree)
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "-uno") else "")


def table(rows: list[AuditRow]) -> list[str]:
    """The results as a Markdown table (also what the terminal shows)."""
    lines = ["| mechanism | claimed ε | δ | trials per world | statistic | ε lower bound "
             "(95 %) | most the trials can show | wall s | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.mechanism} | {r.claimed:g} | {r.delta:g} | {r.trials} | {r.statistic} | "
              f"{r.bound:.2f} | {r.ceiling:.2f} | {r.seconds:.0f} | **{r.verdict}** |"
              for r in rows]
    return lines


METHOD = """## Method

A distinguishing game (Jagielski, Ullman & Oprea, NeurIPS 2020; Nasr, Song, Thakurta,
Papernot & Carlini, IEEE S&P 2021) on add/remove neighbours: D is the demo registry's
{site} ({n_site} patients), D' is D plus one canary patient, valid under the schema and in
rare cells (age 90, atypical subtype, the largest values and the last date). Every trial
calls the node's real Flower ClientApp in-process, on real files, with a privacy ledger of
its own, and computes one number from the reply's arrays only, i.e. from what leaves the
node:

- marginals (plan: marginals, ε as stated, 2 rounds; round 2 gets the site's own stage-1
  tables back) and federated evaluation (plan: marginals with `evaluation-epsilon`; one
  training round, then the evaluation of a 4-row cohort of the canary with a manifest
  signed by the key the node trusts): Σ_t (y_t[c_t] − n_t[c_t]) / σ_t² over the released
  tables t, c_t the canary's cell, n_t D's count there: the log likelihood ratio of the
  canary's one-count shift under the (discrete) Gaussian noise, the most powerful test;
- vae (plan: 1 round of {steps} DP-SGD steps at sample rate 1, hidden 8, latent 2): how far
  the released weights moved against the canary's gradient at the plan's (public) initial
  model, −⟨θ − θ₀, ĝ⟩;
- the old code (commit 14797a3, its own message format, in a subprocess on that tree): the
  `exact_copy_share` its evaluation reply returned for the same 4-row cohort.

For a test "D' when the statistic exceeds t", (ε, δ)-DP implies FPR + e^ε·FNR ≥ 1 − δ and
FNR + e^ε·FPR ≥ 1 − δ (Kairouz, Oh & Viswanath, ICML 2015), so
ε ≥ max(log((1 − δ − FNR_ub) / FPR_ub), log((1 − δ − FPR_ub) / FNR_ub)), with FPR_ub and
FNR_ub one-sided Clopper–Pearson upper bounds at 97.5 % each (Bonferroni: both hold
together at 95 %). The threshold and the side of the test are chosen on the even-numbered
trials; the bound is computed on the odd-numbered ones only, so the search needs no
correction. "Most the trials can show" is the bound of a test that never errs on the
held-out half: with these trial counts no audit can certify more. A bound above the claim is
a violation (95 % confidence that the mechanism is not (ε, δ)-DP). The old code's claimed ε
is 0: its evaluation scores were outside every stated ε (finding 3), so any positive bound is
a violation.

A black-box audit with a few hundred runs per world gives a lower bound, not an estimate:
for the Gaussian mechanisms here, a bound well below the claim is what an honest node
yields, and it rises toward the claim only with far more trials (or larger ε).
"""


def write_results(path: Path, rows: list[AuditRow], seconds: float) -> None:
    """The table as Markdown, with the command, the machine and the method."""
    import psutil
    import torch
    from protocols.demo_registry import simulate_registry
    command = " ".join(["python", "benchmarks/privacy_audit.py", *sys.argv[1:]])
    lines = ["# fedsynth privacy audit\n", f"Command: `{command}`  ",
             f"Run: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.machine()}, "
             f"{psutil.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end), "
             f"{psutil.virtual_memory().total / 2**30:.0f} GiB, torch {torch.__version__}, "
             f"tree {commit_of(ROOT)}; {seconds:.0f} s in all\n", *table(rows), "",
             METHOD.format(site=SITE, n_site=len(simulate_registry().sites[SITE]),
                           steps=VAE_STEPS)]
    path.write_text("\n".join(lines), encoding="utf-8")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"runs per world (D and D') for every mechanism (default "
                        f"{DEFAULT_TRIALS}); half choose the test, half bound it")
    p.add_argument("--epsilon", type=float, default=3.0, help="the plans' ε (default 3)")
    p.add_argument("--evaluation-epsilon", type=float, default=2.0,
                   help="the evaluation plan's evaluation-epsilon, part of --epsilon "
                        "(default 2)")
    p.add_argument("--mechanisms", nargs="*", default=["marginals", "vae", "evaluation"],
                   choices=["marginals", "vae", "evaluation"])
    p.add_argument("--old-code", type=Path, metavar="PATH",
                   help="also audit the federated evaluation of the checkout at PATH "
                        "(e.g. a worktree of 14797a3), in a subprocess")
    p.add_argument("--old-trials", type=int, default=OLD_CODE_TRIALS,
                   help=f"runs per world for --old-code (default {OLD_CODE_TRIALS})")
    p.add_argument("--results", type=Path, help="write the table as Markdown here")
    p.add_argument("--old-worker", type=Path, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)  # a site's "fewer records than the plan" notes
    if args.old_worker:
        old_worker(args.old_worker)
        return
    import torch
    torch.set_num_threads(1)
    as_flower_task()
    start = time.perf_counter()
    # On tmpfs where there is one: each trial's ledger is fsynced, and the audit is about
    # what the node sends, not about the disk.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="fedsynth-audit-",
                                     dir=shm if shm.is_dir() else None) as tmp:
        rows = audit(args, Path(tmp))
    print("\n".join(table(rows)))
    if args.results:
        write_results(args.results, rows, time.perf_counter() - start)
        print(f"\nwritten to {args.results}")


if __name__ == "__main__":
    main()
