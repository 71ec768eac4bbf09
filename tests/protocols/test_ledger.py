"""The ledger format: the hash chain catches any edit, removal or reordering."""

import math
from dataclasses import replace

import pytest

from protocols.errors import BudgetError
from protocols.privacy.ledger import (EVALUATION, GENESIS, RESERVE, ROUND, LedgerEntry,
                                      SiteBudget, check_budget, committed_delta,
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
    budget = SiteBudget(epsilon=5.0, delta=1e-4)
    check_budget(entries, 2.0, 1e-5, budget, "site")
    with pytest.raises(BudgetError, match="needs epsilon 2.5.*2 left"):
        check_budget(entries, 2.5, 1e-5, budget, "site")
    with pytest.raises(BudgetError):  # a non-private study never fits a budget
        check_budget([], math.inf, 1e-5, SiteBudget(10.0, 1e-4), "site")


def test_deltas_add_up_across_studies_like_epsilons():
    """k studies at (ε_i, δ_i) are (Σε_i, Σδ_i)-DP (basic composition): a site whose
    studies' deltas would exceed its delta budget refuses the next one."""
    base = dict(schema_sha256="a" * 64, rounds=2, time="t", round=0, steps_total=0,
                epsilon=1.0, noise_multiplier=1.0, sample_rate=0.2)
    entries = [LedgerEntry(kind=RESERVE, study=f"s{i}", delta=3e-5, **base) for i in range(3)]
    assert committed_delta(entries) == pytest.approx(9e-5)
    budget = SiteBudget(epsilon=100.0, delta=1e-4)
    check_budget(entries, 1.0, 1e-5, budget, "site")
    with pytest.raises(BudgetError, match="needs delta 2e-05"):
        check_budget(entries, 1.0, 2e-5, budget, "site")


def test_an_evaluation_counts_as_spent_and_marks_the_study_evaluated():
    entries = _entries()
    evaluation = replace(entries[-1], kind=EVALUATION, round=0, epsilon=2.999)
    spend = study_spend(parse_ledger(_chain([*entries, evaluation]), "ledger"), "s1")
    assert spend.evaluated and spend.spent == 2.999 and spend.last_round == 2
    assert not study_spend(parse_ledger(_chain(entries), "ledger"), "s1").evaluated
