"""What `quality.py` writes: the tables, the issues' targets and the privacy–utility plot.

Pure functions of the results (scores keyed by (method, ε), one entry per repeat, or a
refusal's reason) except `plot_privacy_utility`, which writes its PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import datasets

ANCHOR = "central AIM on pooled rows (smartnoise-synth)"
COLUMNS = ("column_shapes", "pairwise", "strong_associations_kept", "tstr_ratio",
           "dcr_share", "exact_copies", "mia_auc", "km_distance", "hr_direction_agreement",
           "bias_flags", "wall_s", "bytes_per_site")
HEADERS = ("shapes", "pairs", "strong kept", "TSTR ratio", "DCR share", "copies", "MIA AUC",
           "KM dist", "HR directions", "bias flags", "wall s", "bytes/site")
COLUMN_NOTES = (
    "*wall s*: seconds to make one cohort on this machine (a federated study with the "
    "start-up of Flower's simulation engine; central AIM with its subprocess' start-up, "
    "not the making of its environment). *bytes/site*: what one site sends over a "
    "federated study, computed as the bytes of the arrays it replies with each round "
    "(the family's `global_arrays`, in their shapes and dtypes) × the rounds; Flower's "
    "message framing, the ε reports and SecAgg+'s masks and key shares are not counted.")
Results = dict[tuple[str, float], list[dict | str]]
TARGET_EPSILON = 3.0
# The family whose federated cohort (plain, and with SecAgg+ shares) issue 15's targets
# and the plot hold against central AIM and the best site alone.
ISSUE15_FAMILY = "marginals"
PLOTTED = ("strong_associations_kept", "tstr_ratio")


def federated_method(family: str, secure: bool = False) -> str:
    return f"fedsynth {family}, federated" + (", SecAgg+ shares" if secure else "")


def table(data: datasets.BenchmarkData, results: Results) -> list[str]:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.sites.items())
    lines = [f"\n## {data.name}: {len(data.pooled)} training patients ({sizes}), "
             f"{len(data.holdout)} held out\n",
             "| method | ε per site | " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---|" * len(HEADERS)]
    for (method, eps), runs in results.items():
        scored = _scored(runs)
        refusals = sorted({r for r in runs if isinstance(r, str)})
        if refusals:
            cells = [f"{'; '.join(refusals)}"] + ["—"] * (len(COLUMNS) - 1)
        else:
            cells = [mean_range([r[c] for r in scored]) for c in COLUMNS[:-2]]
            cells += [_seconds([r["wall_s"] for r in scored]),
                      _bytes(scored[0]["bytes_per_site"])]
        lines.append(f"| {method} | {'—' if math.isinf(eps) else f'{eps:g}'} | "
                     + " | ".join(cells) + " |")
    return lines


def issue3_targets(results: Results, families: tuple[str, ...]) -> list[str]:
    if (federated_method(families[0]), TARGET_EPSILON) not in results:
        return []
    marg = results[("independent marginals", math.inf)]
    lines = ["\n### Issue 3 targets, GBSG2 at ε = 3 per site (means over repeats)\n"]
    for family in families:
        fed = _scored(results[(federated_method(family), TARGET_EPSILON)])
        if not fed:
            lines.append(f"\n{family}: the study was refused at ε = 3, no target is met.")
            continue
        alone = _alone(results, TARGET_EPSILON, family).values()
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


def issue15_targets(split: str, results: Results) -> list[str]:
    """Issue 15's targets at ε = 3: the federated marginals cohort, plain and with SecAgg+
    shares, against central AIM on the pooled rows and the best site alone."""
    head = f"\n### Issue 15 targets, {split} at ε = 3 per site (means over repeats)\n"
    aim = _scored(results.get((ANCHOR, TARGET_EPSILON), []))
    if not aim:
        return [head, "Not checked: central AIM was not run at ε = 3."]
    lines = [head, "Central AIM: " + ", ".join(
        f"{key} {_mean(aim, key):.3f}" for key in
        ("column_shapes", "strong_associations_kept", "tstr_ratio", "hr_direction_agreement"))]
    for method in (federated_method(ISSUE15_FAMILY), federated_method(ISSUE15_FAMILY, True)):
        fed = _scored(results.get((method, TARGET_EPSILON), []))
        lines.append(f"\n{method}:")
        if not fed:
            lines.append("- FAIL: not run, or refused, at ε = 3")
            continue
        lines += [f"- {'PASS' if ok else 'FAIL'}: {text}"
                  for text, ok in _issue15_checks(fed, aim, results)]
    return lines


def _issue15_checks(fed: list[dict], aim: list[dict], results: Results
                    ) -> list[tuple[str, bool]]:
    checks = []
    for key, share in (("column_shapes", 0.95), ("tstr_ratio", 0.95),
                       ("strong_associations_kept", 0.90)):
        ours, bar = _mean(fed, key), share * _mean(aim, key)
        checks.append((f"{key} {ours:.3f} ≥ {share * 100:.0f} % of central AIM's ({bar:.3f})",
                       ours >= bar))
    for key in ("pairwise", "strong_associations_kept", "tstr_ratio"):
        best, where = _best_alone(results, TARGET_EPSILON, key)
        ours = _mean(fed, key)
        checks.append((f"{key} {ours:.3f} > best site alone's {best:.3f} ({where})",
                       ours > best))
    ours, theirs = _mean(fed, "hr_direction_agreement"), _mean(aim, "hr_direction_agreement")
    checks.append((f"Cox hazard-ratio directions kept {ours:.3f} ≥ central AIM's {theirs:.3f}",
                   ours >= theirs))
    dcr = _mean(fed, "dcr_share")
    checks.append((f"DCR share {dcr:.3f} ≤ 0.6", dcr <= 0.6))
    copies = sum(r["exact_copies"] for r in fed)
    checks.append((f"no exact copies ({copies} in {len(fed)} cohorts)", copies == 0))
    return checks


def plot_privacy_utility(by_split: dict[str, Results], path: Path) -> None:
    """Per split, strong associations kept and TSTR ratio against ε (mean, min–max bars)
    for the federated marginals cohort, with SecAgg+ shares, central AIM and the best
    site alone (at each ε and score, whichever site and family did best)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(PLOTTED), len(by_split), squeeze=False,
                                figsize=(4.2 * len(by_split), 3.4 * len(PLOTTED)))
    for column, (split, results) in enumerate(by_split.items()):
        for row, key in enumerate(PLOTTED):
            _panel(axes[row][column], results, key)
            axes[row][column].set_title(f"{split}: {key.replace('_', ' ')}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _panel(ax, results: Results, key: str) -> None:
    series = {"federated (marginals)": federated_method(ISSUE15_FAMILY),
              "federated, SecAgg+ shares": federated_method(ISSUE15_FAMILY, True),
              "central AIM, pooled rows": ANCHOR, "best site alone": None}
    epsilons = sorted({eps for _, eps in results if math.isfinite(eps)})
    for number, (label, method) in enumerate(series.items()):
        points = [(eps, [r[key] for r in _runs_for(results, method, eps, key)
                         if r[key] is not None]) for eps in epsilons]
        points = [(eps, values) for eps, values in points if values]
        if not points:
            continue
        # side by side around each ε, in a fixed colour per series
        x = np.array([eps for eps, _ in points]) * 1.04 ** (number - 1.5)
        mean = np.array([np.mean(values) for _, values in points])
        spread = np.array([[m - min(v), max(v) - m] for m, (_, v) in zip(mean, points)])
        ax.errorbar(x, mean, yerr=spread.T, marker="o", capsize=3, label=label,
                    color=f"C{number}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(epsilons, [f"{eps:g}" for eps in epsilons])
    ax.set_xlim(min(epsilons) / 1.4, max(epsilons) * 1.4)
    ax.set_ylim(0, max(1.05, ax.get_ylim()[1]))
    ax.set_xlabel("ε per site")


def _runs_for(results: Results, method: str | None, eps: float, key: str) -> list[dict]:
    if method is not None:
        return _scored(results.get((method, eps), []))
    return max(_alone(results, eps).values(), key=lambda runs: _mean(runs, key), default=[])


def _alone(results: Results, eps: float, family: str | None = None) -> dict[str, list[dict]]:
    """The scored runs of every site alone at `eps`, by method (of `family`, or of any);
    a site the size rule refuses alone has no score to beat."""
    alone = {}
    for (method, at), runs in results.items():
        _, is_alone, of = method.partition(" alone, ")
        if at == eps and is_alone and family in (None, of) and _scored(runs):
            alone[method] = _scored(runs)
    return alone


def _best_alone(results: Results, eps: float, key: str) -> tuple[float, str]:
    alone = _alone(results, eps)
    if not alone:
        return math.nan, "no site scored alone"
    method = max(alone, key=lambda name: _mean(alone[name], key))
    return _mean(alone[method], key), method


def _scored(runs: list[dict | str]) -> list[dict]:
    return [r for r in runs if isinstance(r, dict)]


def _mean(runs: list[dict | str], key: str) -> float:
    present = [r[key] for r in runs if isinstance(r, dict) and r[key] is not None]
    return float(np.mean(present)) if present else float("nan")


def mean_range(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    mean = float(np.mean(present))
    if len(present) == 1:
        return f"{mean:.3g}" if abs(mean) >= 10 else f"{mean:.3f}"
    return f"{mean:.3f} [{min(present):.2f}–{max(present):.2f}]"


def _seconds(values: list[float]) -> str:
    def shown(seconds: float) -> str:
        return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"
    mean = float(np.mean(values))
    if len(values) == 1:
        return shown(mean)
    return f"{shown(mean)} [{shown(min(values))}–{shown(max(values))}]"


def _bytes(count: int | None) -> str:
    return "—" if count is None else f"{count:,}"
