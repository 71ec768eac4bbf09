"""The privacy ledger's format: append-only, hash-chained entries.

Every node keeps one ledger (a JSON-lines file). Each line is one entry and
carries the SHA-256 of the line before it, so an entry edited, reordered or
removed from the middle breaks the chain and the ledger is refused until an
operator acts. A ledger cut short at its end, deleted, or rewritten with a
recomputed chain still reads as a valid chain on its own: the hash of its last
entry (its *head*) is therefore also kept outside it, by the node beside its
kit and by the coordinator in every manifest, and a ledger that no longer
holds a head kept elsewhere is refused (`holds_head`, `node.ledger.anchor`).

Three kinds of entry:
- `reserve`: a study's first round at this site; it commits the plan's whole
  ε and δ (the noise was calibrated for all rounds and the evaluation) and
  records the mechanism's parameters. A study is refused before any step if
  its reserve would take the site past its ε or δ budget. Across studies ε and
  δ add up (basic composition: k studies at (ε_i, δ_i) are (Σε_i, Σδ_i)-DP;
  Dwork & Roth 2014, Theorem 3.16), which is what the budget counts.
- `round`: one round the site trained and answered, with the steps run so far
  in that study and the ε its accountant reports for them. A round is charged
  once: a coordinator that resumes and asks again for the same round with the
  same model gets the stored answer (no new release), and one that asks with
  a different model is refused.
- `evaluation`: the site's one federated-evaluation release for the study,
  with the ε of everything the study has released at this site, evaluation
  included. A second evaluation of the same study is refused.

These functions are pure; `node.ledger.privacy_ledger` does the file I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

from protocols.errors import BudgetError

GENESIS = "0" * 64
RESERVE = "reserve"
ROUND = "round"
EVALUATION = "evaluation"


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the ledger (without its own hash)."""

    kind: str
    study: str  # the plan's fingerprint with its schema (StudyPlan.fingerprint)
    schema_sha256: str
    round: int
    steps_total: int
    epsilon: float  # reserve: the plan's ε for the whole study; round, evaluation: spent so far
    delta: float
    rounds: int
    time: str
    noise_multiplier: float = 0.0  # reserve only: the mechanism fixed for the whole study
    sample_rate: float = 0.0
    prev: str = GENESIS


@dataclass(frozen=True)
class StudySpend:
    """What one study has committed and spent at this site."""

    study: str
    reserved: float
    noise_multiplier: float
    sample_rate: float
    spent: float
    last_round: int
    steps_total: int
    delta: float = 0.0
    evaluated: bool = False


def entry_line(entry: LedgerEntry) -> str:
    """The entry as one JSON line with its hash (over every other field)."""
    fields_ = _as_json(entry)
    return json.dumps({**fields_, "hash": _digest(fields_)}, sort_keys=True)


def parse_ledger(lines: Sequence[str], source: str) -> list[LedgerEntry]:
    """Check the chain line by line; raise `BudgetError` naming the first bad line."""
    entries, problem = read_chain(lines, source)
    if problem is not None:
        raise problem
    return entries


def read_chain(lines: Sequence[str], source: str) -> tuple[list[LedgerEntry], BudgetError | None]:
    """The entries up to the first line that breaks the chain, and the error naming that
    line (None when the whole chain holds): what an operator needs to investigate."""
    entries: list[LedgerEntry] = []
    prev = GENESIS
    names = {f.name for f in fields(LedgerEntry)}
    for number, line in enumerate(lines, start=1):
        try:
            raw = json.loads(line)
            stated = raw.pop("hash")
            if set(raw) != names:
                raise ValueError("unexpected fields")
            entry = LedgerEntry(**{k: (_number(raw[k]) if k == "epsilon" else raw[k])
                                   for k in names})
        except (ValueError, KeyError, TypeError, AttributeError):
            return entries, _broken(source, number, "is not a ledger entry")
        if entry.prev != prev or _digest(_as_json(entry)) != stated:
            return entries, _broken(source, number, "does not follow from the line before it")
        entries.append(entry)
        prev = stated
    return entries, None


def last_hash(entries: Sequence[LedgerEntry]) -> str:
    return _digest(_as_json(entries[-1])) if entries else GENESIS


def entry_hashes(entries: Sequence[LedgerEntry]) -> list[str]:
    """The hash of every entry, in order: the heads the ledger has had."""
    return [_digest(_as_json(entry)) for entry in entries]


def is_head(text: object) -> bool:
    """Whether `text` has the form of a ledger head: 64 lowercase hex digits."""
    return (isinstance(text, str) and len(text) == 64
            and all(c in "0123456789abcdef" for c in text))


def holds_head(entries: Sequence[LedgerEntry], head: str) -> bool:
    """Whether the ledger once had `head` as its last entry's hash (the empty ledger's
    head, GENESIS, is held by every ledger). A ledger that was truncated before it,
    deleted or rewritten (even with a recomputed chain) does not hold it."""
    return head == GENESIS or head in entry_hashes(entries)


def study_spend(entries: Iterable[LedgerEntry], study: str) -> StudySpend | None:
    """The study's reserve and progress at this site, or None if it never started."""
    mine = [e for e in entries if e.study == study]
    reserve = next((e for e in mine if e.kind == RESERVE), None)
    if reserve is None:
        return None
    rounds = [e for e in mine if e.kind == ROUND]
    released = [e for e in mine if e.kind in (ROUND, EVALUATION)]
    last = max(rounds, key=lambda e: e.round, default=None)
    return StudySpend(study=study, reserved=reserve.epsilon,
                      noise_multiplier=reserve.noise_multiplier, sample_rate=reserve.sample_rate,
                      spent=max((e.epsilon for e in released), default=0.0),
                      last_round=last.round if last else 0,
                      steps_total=last.steps_total if last else 0, delta=reserve.delta,
                      evaluated=any(e.kind == EVALUATION for e in mine))


def study_rounds(entries: Iterable[LedgerEntry], study: str) -> list[int]:
    """The rounds of `study` this site answered (each charged once)."""
    return sorted({e.round for e in entries if e.study == study and e.kind == ROUND})


def committed_epsilon(entries: Iterable[LedgerEntry]) -> float:
    """ε committed by every study this site has started (each counted at its plan's ε)."""
    return sum(e.epsilon for e in entries if e.kind == RESERVE)


def committed_delta(entries: Iterable[LedgerEntry]) -> float:
    """δ committed by every study this site has started (basic composition adds them)."""
    return sum(e.delta for e in entries if e.kind == RESERVE)


@dataclass(frozen=True)
class SiteBudget:
    """What a site allows over all its studies: total ε and total δ."""

    epsilon: float
    delta: float


def check_budget(entries: Sequence[LedgerEntry], epsilon: float, delta: float,
                 budget: SiteBudget, site: str) -> None:
    """Refuse a new study whose ε or δ would take the site past its budget."""
    for what, needed, committed, allowed in (
            ("epsilon", epsilon, committed_epsilon(entries), budget.epsilon),
            ("delta", delta, committed_delta(entries), budget.delta)):
        if committed + needed > allowed * (1 + 1e-9) + 1e-12:
            raise BudgetError(
                f"Site {site} refuses the study: it needs {what} {needed:g}, but the site has "
                f"already committed {committed:g} of its {what} budget of {allowed:g} to "
                f"earlier studies ({allowed - committed:g} left). Nothing was trained.")


def _as_json(entry: LedgerEntry) -> dict:
    values = asdict(entry)
    if not math.isfinite(values["epsilon"]):
        values["epsilon"] = "inf"
    return values


def _number(value: object) -> float:
    return math.inf if value == "inf" else float(value)  # type: ignore[arg-type]


def _digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()


def _broken(source: str, line: int, rule: str) -> BudgetError:
    return BudgetError(
        f"{source}, line {line}: the privacy ledger's entry {rule}; the hash chain is broken, "
        "so what this site has spent cannot be trusted. The node refuses to train until an "
        "operator restores the ledger from a backup or investigates.")
