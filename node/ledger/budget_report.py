"""`fedsynth-node budget`: what the site's privacy ledger says is spent and left.

The report is read from the ledger alone (`protocols.privacy.ledger`): every study the
site has started, with its schema, its planned ε and δ, the ε its accountant
reports so far, the rounds answered and whether it was evaluated, then the
site's ε and δ budgets, what studies have committed of them and what is left.
Each study commits its whole planned ε and δ when it starts (its noise was
calibrated for all its rounds and its evaluation), so "left" counts what is
committed, not only what has been spent so far; across studies ε and δ both
add up (basic composition). A broken chain is shown up
to the line that breaks it, so an operator can compare with a backup; a ledger
that no longer holds the head the node kept outside it (deleted, cut short,
rewritten: `node.ledger.anchor`) is shown with a paragraph saying so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node.ledger.anchor import read_head_file, rollback_problem
from node.ledger.privacy_ledger import PrivacyLedger
from protocols.errors import BudgetError, FedsynthError
from protocols.privacy.ledger import RESERVE, LedgerEntry, last_hash, study_spend


@dataclass(frozen=True)
class StudyLine:
    """One study at this site, as its ledger entries describe it."""

    study: str
    schema_sha256: str
    started: str
    epsilon_planned: float
    epsilon_spent: float
    delta: float
    rounds_answered: int
    rounds_planned: int
    evaluated: bool = False


@dataclass(frozen=True)
class BudgetReport:
    ledger: str
    entries: int
    intact: bool
    problem: str | None
    last_hash: str
    budget: float
    studies: tuple[StudyLine, ...]
    delta_budget: float = 1.0
    rolled_back: str | None = None  # why the ledger lost the head kept outside it

    @property
    def trusted(self) -> bool:
        """Chain intact and still holding the head kept outside it."""
        return self.intact and self.rolled_back is None

    @property
    def committed(self) -> float:
        return sum(s.epsilon_planned for s in self.studies)

    @property
    def delta_committed(self) -> float:
        return sum(s.delta for s in self.studies)

    @property
    def delta_left(self) -> float:
        return self.delta_budget - self.delta_committed

    @property
    def spent(self) -> float:
        return sum(s.epsilon_spent for s in self.studies)

    @property
    def left(self) -> float:
        return math.inf if math.isinf(self.budget) else self.budget - self.committed

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (an infinite ε or budget is the string "inf", NaN null)."""
        return _finite({**asdict(self), "committed": self.committed, "spent": self.spent,
                        "left": self.left, "delta_committed": self.delta_committed,
                        "delta_left": self.delta_left,
                        "studies": [asdict(s) for s in self.studies]})


def read_budget(state_dir: Path, budget: float, delta_budget: float = 1.0,
                head_file: Path | None = None) -> BudgetReport:
    """The site's ledger in `state_dir`, summarised against its ε `budget` and its
    `delta_budget`, and checked against the head kept in `head_file` (if any)."""
    ledger = PrivacyLedger(state_dir)
    try:
        entries, problem = ledger.chain()
    except OSError as exc:
        raise FedsynthError(f"Cannot read the privacy ledger {ledger.path}: "
                            f"{exc.strerror}.") from None
    return BudgetReport(ledger=str(ledger.path), entries=len(entries), intact=problem is None,
                        problem=str(problem) if problem else None,
                        last_hash=last_hash(entries), budget=budget,
                        studies=tuple(_studies(entries)), delta_budget=delta_budget,
                        rolled_back=_rolled_back(entries, ledger.path, head_file))


def _rolled_back(entries: list[LedgerEntry], ledger_path: Path,
                 head_file: Path | None) -> str | None:
    if head_file is None:
        return None
    try:
        kept = read_head_file(head_file)
    except BudgetError as exc:
        return str(exc)
    if kept is None:
        return None
    return rollback_problem(entries, kept, ledger_path, f"this node's head file {head_file}")


def _studies(entries: list[LedgerEntry]) -> list[StudyLine]:
    lines = []
    for reserve in (e for e in entries if e.kind == RESERVE):
        spend = study_spend(entries, reserve.study)
        lines.append(StudyLine(study=reserve.study, schema_sha256=reserve.schema_sha256,
                               started=reserve.time, epsilon_planned=reserve.epsilon,
                               epsilon_spent=spend.spent if spend else 0.0,
                               delta=reserve.delta,
                               rounds_answered=spend.last_round if spend else 0,
                               rounds_planned=reserve.rounds,
                               evaluated=bool(spend and spend.evaluated)))
    return lines


def report_text(report: BudgetReport) -> str:
    """The report as a data steward reads it."""
    head = (f"Privacy ledger {report.ledger}: {report.entries} entries, hash chain "
            + ("intact" if report.intact else "BROKEN")
            + f" (last good hash {report.last_hash[:16]}).")
    if not report.studies:
        rows = ["No study has run at this site yet."]
    else:
        rows = [f"{'study':<14}{'schema':<14}{'started':<27}{'epsilon':>9}{'spent':>9}"
                f"{'delta':>9}{'rounds':>8}{'evaluated':>11}"]
        rows += [f"{s.study[:12]:<14}{s.schema_sha256[:12]:<14}{s.started:<27}"
                 f"{_num(s.epsilon_planned):>9}{_num(s.epsilon_spent):>9}{s.delta:>9.2g}"
                 f"{f'{s.rounds_answered}/{s.rounds_planned}':>8}"
                 f"{'yes' if s.evaluated else 'no':>11}" for s in report.studies]
    total = (f"Budget: epsilon {_num(report.budget)}; committed {_num(report.committed)} by "
             f"{len(report.studies)} stud{'y' if len(report.studies) == 1 else 'ies'} "
             f"(spent so far {_num(report.spent)}); left {_num(report.left)}.")
    deltas = (f"Delta budget {report.delta_budget:.3g}; committed "
              f"{report.delta_committed:.3g}; left {report.delta_left:.3g}.")
    lines = [head, *rows, total, deltas]
    if report.problem:
        lines.append(f"The entries after the break are not counted above: {report.problem}")
    if report.rolled_back:
        lines.append(f"NOT TO BE TRUSTED: {report.rolled_back}")
    return "\n".join(lines)


def _num(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
