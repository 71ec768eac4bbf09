"""The ledger format: the hash chain catches any edit, removal or reordering."""

import math
from dataclasses import replace

import pytest

from protocols.errors import BudgetError
from protocols.ledger import (GENESIS, RESERVE, ROUND, LedgerEntry, check_budget,
                              committed_epsilon, entry_line, last_hash, parse_ledger,
                              study_spend)


def _chain(entries):
    lines, chained = [], []
    for entry in entries:
        entry = replace(entry, prev=last_hash(chained))
        chained.append(entry)
        lines.append(entry_line(entry))
    return lines


def _entries():
    base = dict(study="s1", schema_sha256="a" * 64, delta=1e-5, rounds=2, time="t")
    return [LedgerEntry(kind=RESERVE, round=0, steps_total=0, epsilon=3.0,
                        noise_multiplier=1.5, sample_rate=0.2, **base),
            LedgerEntry(kind=ROUND, round=1, steps_total=10, epsilon=2.1, **base),
            LedgerEntry(kind=ROUND, round=2, steps_total=20, epsilon=2.99, **base)]


def test_an_intact_chain_reads_back_entry_for_entry():
    lines = _chain(_entries())
    parsed = parse_ledger(lines, "ledger")
    assert [e.round for e in parsed] == [0, 1, 2] and parsed[0].prev == GENESIS
    spend = study_spend(parsed, "s1")
    assert (spend.reserved, spend.spent, spend.last_round, spend.steps_total) == (3.0, 2.99, 2, 20)
    assert spend.noise_multiplier == 1.5 and study_spend(parsed, "other") is None


@pytest.mark.parametrize("tamper, line", [
    (lambda ls: [ls[0].replace('"epsilon": 3.0', '"epsilon": 1.0'), *ls[1:]], 1),  # edited
    (lambda ls: ls[1:], 1),  # first entry removed
    (lambda ls: [ls[0], ls[2]], 2),  # a middle entry removed
    (lambda ls: [ls[0], ls[2], ls[1]], 2),  # reordered
    (lambda ls: [*ls[:2], "not json"], 3),
])
def test_a_tampered_ledger_is_refused_at_the_first_bad_line(tamper, line):
    with pytest.raises(BudgetError, match=f"ledger, line {line}: .*hash chain is broken"):
        parse_ledger(tamper(_chain(_entries())), "ledger")


def test_budget_counts_every_started_study_at_its_plan_epsilon():
    entries = parse_ledger(_chain(_entries()), "ledger")
    assert committed_epsilon(entries) == 3.0
    check_budget(entries, 2.0, 5.0, "site")
    with pytest.raises(BudgetError, match="needs epsilon 2.5.*2 left"):
        check_budget(entries, 2.5, 5.0, "site")
    with pytest.raises(BudgetError):
        check_budget([], math.inf, 10.0, "site")  # a non-private study never fits a budget
