"""The manifest that travels with every released cohort.

It states what the files are (synthetic, never real records), which data
contract they follow (schema SHA-256), how private they are (per-site ε spent
and δ, the plan, the accountant), how they were made (engine, rounds, sites,
seed, fedsynth version) and the SHA-256 and size of each cohort file, so any
change to a file is detectable. The coordinator signs it before release
(`protocols.manifest_signing`), which makes a change to the manifest itself
detectable too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols import __version__
from protocols.accounting import ACCOUNTANT
from protocols.plan import StudyPlan

MANIFEST_NAME = "manifest.json"
PROVENANCE = "fedsynth synthetic cohort: generated, not real patient records"


@dataclass(frozen=True)
class SitePrivacySpent:
    """One site's privacy cost as reported by its own accountant."""

    epsilon: float
    steps: int
    synthetic_input: bool = False  # its operator let it train on a fedsynth cohort


MECHANISMS = {
    "vae": "DP-SGD with Poisson sampling on a tabular VAE",
    "marginals": "Gaussian mechanism on column and pair tables, released once",
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(*, schema_sha256: str, plan: StudyPlan, sites: Mapping[str, SitePrivacySpent],
                   contributions: Mapping[str, list[int]], engine: str, tls: bool,
                   files: Mapping[str, Path], rows: int) -> dict[str, Any]:
    """The manifest as plain JSON values (ε of a non-private study is null).

    `contributors` are exactly the sites whose updates went into the final
    model (at least one round), and `contributions` the rounds of each; `tls`
    says whether the sites' traffic went over TLS verified by the consortium CA
    (a simulation has no network: false). `trained_on_synthetic` names the
    sites whose operator explicitly let them train on a fedsynth cohort (model
    collapse risk: such a cohort is partly generated from generated data)."""
    contributors = sorted(name for name, rounds in contributions.items() if rounds)
    return {
        "synthetic": True,
        "provenance": PROVENANCE,
        "fedsynth_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "schema_sha256": schema_sha256,
        "engine": engine,
        "tls": tls,
        "secure_aggregation": plan.secure_aggregation,
        "generator": plan.generator,
        "rows": rows,
        "seed": plan.seed,
        "rounds": plan.rounds,
        "n_sites": len(sites),
        "contributors": contributors,
        "contributions": {name: sorted(contributions[name]) for name in contributors},
        "trained_on_synthetic": sorted(name for name, spent in sites.items()
                                       if spent.synthetic_input),
        "privacy": {
            "private": plan.private,
            "guarantee": (f"record-level (epsilon, delta)-DP per site over the whole study, "
                          f"{MECHANISMS[plan.generator]}" if plan.private else
                          "none: trained without differential privacy (reference only)"),
            "accountant": ACCOUNTANT if plan.private else None,
            "site_sizes_disclosed": (f"rounded to a multiple of {plan.size_granularity}"
                                     if plan.size_granularity else "no"),
            "epsilon_target_per_site": _finite_or_none(plan.epsilon),
            "delta_per_site": plan.delta if plan.private else None,
            "sites": {name: {"epsilon_spent": _finite_or_none(spent.epsilon),
                             "delta": plan.delta if plan.private else None,
                             "steps": spent.steps,
                             "synthetic_input": spent.synthetic_input}
                      for name, spent in sorted(sites.items())},
        },
        "plan": {k: _finite_or_none(v) for k, v in plan.to_config().items()},
        "files": {name: {"sha256": file_sha256(path), "bytes": path.stat().st_size}
                  for name, path in sorted(files.items())},
    }


def render_manifest(manifest: Mapping[str, Any]) -> str:
    """The manifest file's exact text; a verifier re-renders it to spot any edited byte."""
    return json.dumps(manifest, indent=2, allow_nan=False) + "\n"


def write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    path.write_text(render_manifest(manifest), encoding="utf-8")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
