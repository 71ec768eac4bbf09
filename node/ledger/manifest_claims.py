"""What a signed manifest says about this site, checked against the site's own ledger.

The signature proves who wrote the manifest, not that its words about a site are
true: the per-site ε, steps, δ and rounds are the coordinator's record of what the
site sent. `fedsynth-node verify --kit` compares them with the ledger the node wrote
as it answered: the study must be one the site reserved, every round the manifest
credits to it one the site answered, the ε and steps those its ledger charged at the
last such round, the δ its reserve's, and the ledger head it records one the ledger
still holds. A study the manifest says nothing about at this site is no problem.

It also compares the app bundle the study ran (the manifest's `app_sha256`, as Flower
told the coordinator) with the one the site's kit pins (`[app] sha256` of node.toml):
the node runs only that bundle's release, so a cohort made by any other was not made
by the code this site agreed to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.ledger.anchor import rollback_problem
from protocols.kit_layout import APP_SHA256, NODE_TOML
from protocols.privacy.ledger import RESERVE, ROUND, LedgerEntry, is_head


def claim_problems(manifest: Mapping[str, Any], site: str, entries: Sequence[LedgerEntry],
                   ledger_path: Path) -> tuple[list[str], str]:
    """(problems, one line saying what was compared) for `site`'s claims in `manifest`."""
    study = str(manifest.get("study", ""))
    claims = (manifest.get("privacy") or {}).get("sites", {}).get(site)
    rounds = (manifest.get("contributions") or {}).get(site, [])
    head = (manifest.get("ledger_heads") or {}).get(site)
    if claims is None and not rounds and head is None:
        return [], f"The manifest says nothing about site {site}."
    mine = [e for e in entries if e.study == study]
    reserve = next((e for e in mine if e.kind == RESERVE), None)
    if reserve is None:
        return [f"the manifest credits site {site} with study {study[:12]}, but its ledger "
                f"{ledger_path} holds no reserve of that study"], ""
    answered = {e.round: e for e in mine if e.kind == ROUND}
    problems = [f"the manifest credits site {site} with round {r}, which its ledger does "
                "not record as answered" for r in rounds if r not in answered]
    if rounds and max(rounds) in answered and claims is not None:
        last = answered[max(rounds)]
        problems += _compare("epsilon spent", claims.get("epsilon_spent"), last.epsilon)
        problems += _compare("steps", claims.get("steps"), last.steps_total)
    if claims is not None and claims.get("delta") is not None:
        problems += _compare("delta", claims.get("delta"), reserve.delta)
    if head is not None:
        problem = rollback_problem(entries, head, ledger_path, "the manifest") \
            if is_head(head) else f"the manifest's ledger head {head!r} is not a head"
        problems += [problem] if problem else []
    compared = (f"Site {site}: the manifest's rounds {sorted(rounds)}, epsilon, steps, delta "
                f"and ledger head agree with its ledger {ledger_path}.")
    return problems, compared


def app_hash_problem(manifest: Mapping[str, Any], pinned: str, kit_dir: Path) -> str | None:
    """One line naming both hashes when the manifest records another app bundle (or none)
    than the one the kit in `kit_dir` pins; None when they agree."""
    recorded = manifest.get("app_sha256")
    if recorded == pinned:
        return None
    return (f"the manifest records app bundle sha256 {recorded or 'none'}, but this site's "
            f"kit pins {pinned} ({APP_SHA256} of {kit_dir / NODE_TOML}): the cohort was not "
            "made by the release this site runs")


def _compare(what: str, claimed: Any, recorded: float) -> list[str]:
    value = math.inf if claimed is None else claimed
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            value == recorded or math.isclose(value, recorded, rel_tol=1e-9)):
        return []
    return [f"the manifest states {what} {claimed!r} for this site; its ledger records "
            f"{recorded:g}"]
