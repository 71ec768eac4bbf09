"""The manifest that travels with every released cohort.

It states what the files are (synthetic, never real records), which data
contract they follow (schema SHA-256), which study made them (the plan's
fingerprint with the schema and the study's random nonce, the id every site's ledger
knows it by; the Flower run that released it and the sha256 of the app bundle that run
shipped, which a site compares with the one its kit pins), how
private they are (one plain sentence naming the neighbouring relation, the
mechanism, ε, δ and what is trusted; per-site ε spent; the plan; the
accountant), how they were made (engine, rounds, sites, seed, fedsynth
version) and the SHA-256 and size of each cohort file, so any change to a file
is detectable. Everything it says about a site's privacy follows from the plan
and from which rounds the site answered, never from the site's records. The coordinator signs it before release
(`protocols.release.signing`), which makes a change to the manifest itself
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
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.privacy.accounting import ACCOUNTANT

MANIFEST_NAME = "manifest.json"
CSV_NAME = "synthetic.csv"
PARQUET_NAME = "synthetic.parquet"
PROVENANCE = "fedsynth synthetic cohort: generated, not real patient records"


@dataclass(frozen=True)
class Release:
    """A released cohort: the folder its files are in, and the manifest that lists them."""

    directory: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class SitePrivacySpent:
    """One site's privacy cost as reported by its own accountant."""

    epsilon: float
    steps: int
    synthetic_input: bool = False  # its operator let it train on a fedsynth cohort
    ledger_head: str = ""  # its privacy ledger's head after its last answer ("" if unknown)


@dataclass(frozen=True)
class StudyRun:
    """The Flower run that released a cohort, as Flower tells the ServerApp: its run id
    and the sha256 of the app bundle (FAB) the run shipped; None where Flower ran no
    bundle (its simulation engine runs the apps it is handed, in-process)."""

    run_id: int
    app_sha256: str | None


NEIGHBOURING = "add or remove one patient's record at one site"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(*, schema_sha256: str, plan: StudyPlan, sites: Mapping[str, SitePrivacySpent],
                   contributions: Mapping[str, list[int]], engine: str, tls: bool,
                   files: Mapping[str, Path], rows: int,
                   exposed_epsilon: float | None = None,
                   run: StudyRun | None = None) -> dict[str, Any]:
    """The manifest as plain JSON values (ε of a non-private study is null).

    `exposed_epsilon`: when the sites added only shares of one central noise behind
    SecAgg+ (`GeneratorFamily.exposed_epsilon`), what one site's release is worth if
    the coordinator saw it alone; stated next to the guarantee it weakens.

    `contributors` are exactly the sites whose updates went into the final
    model (at least one round), and `contributions` the rounds of each; `tls`
    says whether the sites' traffic went over TLS verified by the consortium CA
    (a simulation has no network: false). `trained_on_synthetic` names the
    sites whose operator explicitly let them train on a fedsynth cohort (model
    collapse risk: such a cohort is partly generated from generated data).
    `ledger_heads`: the head of each site's privacy ledger after its last answer in
    the study, as the site reported it; the coordinator presents it at the site's next
    study, and the site refuses a ledger that no longer holds it (a rollback).
    `flower_run_id` (text, as Flower's CLI prints it: a 64-bit id) and `app_sha256` come
    from `run`, the Flower run that released the cohort (a resumed study's last run);
    null where unknown."""
    contributors = sorted(name for name, rounds in contributions.items() if rounds)
    family = family_for(plan)
    return {
        "synthetic": True,
        "provenance": PROVENANCE,
        "fedsynth_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "schema_sha256": schema_sha256,
        "study": plan.fingerprint(schema_sha256),
        "engine": engine,
        "flower_run_id": str(run.run_id) if run is not None else None,
        "app_sha256": run.app_sha256 if run is not None else None,
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
        "ledger_heads": {name: spent.ledger_head for name, spent in sorted(sites.items())
                         if spent.ledger_head},
        "privacy": {
            "private": plan.private,
            "statement": privacy_sentence(plan, exposed_epsilon),
            "guarantee": (f"record-level (epsilon, delta)-DP per site over the whole study, "
                          f"{family.mechanism}" if plan.private else
                          "none: trained without differential privacy (reference only)"),
            "neighbouring": NEIGHBOURING if plan.private else None,
            "mechanism": family.mechanism if plan.private else None,
            "cohort_model": family.cohort_model,
            "accountant": (f"{ACCOUNTANT} (Opacus' Renyi-DP accountant; every release of the "
                           "study composed)") if plan.private else None,
            "site_sizes_disclosed": "no",
            "epsilon_target_per_site": _finite_or_none(plan.epsilon),
            "epsilon_spent_covers": ("each site's releases the cohort was made from; the "
                                     "evaluation release that follows it stays within "
                                     "epsilon_target_per_site" if plan.evaluated else
                                     "each site's releases the cohort was made from"),
            "delta_per_site": plan.delta if plan.private else None,
            "evaluation_epsilon": plan.evaluation_epsilon if plan.evaluated else None,
            "noise": ("shares: every secure sum holds at least the central noise of "
                      f"{plan.min_sites - plan.colluders} honest sites' shares"
                      if exposed_epsilon is not None else
                      "each site adds the full noise" if plan.private else None),
            "colluders_tolerated": plan.colluders if exposed_epsilon is not None else None,
            "epsilon_if_secure_aggregation_fails": _finite_or_none(exposed_epsilon)
            if exposed_epsilon is not None else None,
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


def privacy_sentence(plan: StudyPlan, exposed_epsilon: float | None = None) -> str:
    """The guarantee in one plain sentence: relation, mechanism, ε, δ, trust."""
    if not plan.private:
        return ("This cohort comes with no privacy guarantee: it was generated without "
                "differential privacy, as a reference, and must not be shared.")
    evaluation = (f", including the one federated evaluation release of the cohort (epsilon "
                  f"{plan.evaluation_epsilon:g} on its own)" if plan.evaluated else "")
    if exposed_epsilon is not None:
        honest = plan.min_sites - plan.colluders
        return (f"Each hospital's patients are protected by ({plan.epsilon:g}, "
                f"{plan.delta:g})-differential privacy over this whole study, for adding or "
                f"removing one patient's record at that hospital, by "
                f"{family_for(plan).mechanism}{evaluation}, each hospital adding a share of "
                "the noise; the bound holds against a coordinator that runs SecAgg+ as "
                f"specified, so that it only ever sees sums in which at least {honest} "
                f"hospitals' shares are honest (at most {plan.colluders} colluding with it), "
                "and against every other hospital. If secure aggregation failed and the "
                "coordinator saw one hospital's tables alone, that hospital's patients would "
                f"be protected by ({exposed_epsilon:.3g}, {plan.delta:g})-differential "
                "privacy only. It trusts that each hospital runs its own installed fedsynth "
                "node and keeps its privacy ledger.")
    combining = ("only ever holds the sites' summed updates (SecAgg+, not needed for this "
                 "bound)" if plan.secure_aggregation else "sees each site's noisy update")
    return (f"Each hospital's patients are protected by ({plan.epsilon:g}, {plan.delta:g})-"
            f"differential privacy over this whole study, for adding or removing one "
            f"patient's record at that hospital, by {family_for(plan).mechanism}"
            f"{evaluation}; the bound holds against the coordinator, which {combining}, "
            "and against every other hospital, trusting only that each hospital runs its own "
            "installed fedsynth node and keeps its privacy ledger.")


def render_manifest(manifest: Mapping[str, Any]) -> str:
    """The manifest file's exact text; a verifier re-renders it to spot any edited byte."""
    return json.dumps(manifest, indent=2, allow_nan=False) + "\n"


def write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    path.write_text(render_manifest(manifest), encoding="utf-8")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
