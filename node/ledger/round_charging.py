"""Answering a study's round, and its one evaluation, at most once per privacy charge.

Before any step the node checks its ledger (chain intact, and still holding
the heads kept outside it, its own and the one the coordinator presents:
`node.ledger.anchor`); before any step of a new study also the ε and δ budget
left, and it reserves the plan's ε and δ; the noise multiplier and sampling rate
(functions of the plan alone) are fixed then, for every round. Each round
trained is charged on the ledger before its answer leaves. When a resumed coordinator asks again for a round:
- same round, same global model: the stored answer is given again (the same
  release; nothing new is spent) — but never under secure aggregation, where
  a second secure sum over a different set of sites would reveal this site's
  update by subtraction;
- a round already charged with a different model: refused, since training it
  again would spend the site's budget twice.
The study's federated evaluation (`charge_evaluation`) is charged the same way:
once, by a site that took part in the study, before anything is computed; it
closes the study at the site (no round follows it, so no ε reported later
could leave it out).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.ledger.anchor import LedgerAnchor, check_anchor
from node.ledger.privacy_ledger import PrivacyLedger, exclusive, now_utc
from node.ledger.round_replay import StoredAnswer, store_answer, stored_answer
from protocols import messages as keys
from protocols.errors import BudgetError
from protocols.generators.family import SitePrivacy
from protocols.plan import StudyPlan
from protocols.privacy.ledger import (EVALUATION, RESERVE, ROUND, LedgerEntry, SiteBudget,
                                      StudySpend, check_budget, last_hash, study_spend)


@dataclass(frozen=True)
class RoundRequest:
    """What the coordinator asks of this site in one round."""

    site: str
    plan: StudyPlan
    schema_sha256: str
    round: int
    model_sha256: str

    @property
    def study(self) -> str:
        return self.plan.fingerprint(self.schema_sha256)


# Trains one round given the mechanism and the steps already run; returns the answer.
TrainFn = Callable[[SitePrivacy, int], StoredAnswer]


def answer_round(state_dir: Path, budget: SiteBudget, request: RoundRequest,
                 privacy_for_new_study: Callable[[], SitePrivacy], train: TrainFn,
                 anchor: LedgerAnchor = LedgerAnchor()) -> tuple[StoredAnswer, str]:
    """The site's answer to `request`, charged on the ledger exactly once (under the
    site's ledger lock, from the anchor and budget checks to the charge), and the
    ledger's head right after that charge, read under the same lock."""
    with exclusive(state_dir):
        answer = _answer_round(state_dir, budget, request, privacy_for_new_study, train,
                               anchor)
        return answer, last_hash(PrivacyLedger(state_dir).entries())


def _answer_round(state_dir: Path, budget: SiteBudget, request: RoundRequest,
                  privacy_for_new_study: Callable[[], SitePrivacy], train: TrainFn,
                  anchor: LedgerAnchor) -> StoredAnswer:
    ledger = PrivacyLedger(state_dir, anchor.head_file)
    entries = ledger.entries()
    check_anchor(entries, anchor, ledger.path)
    stored = stored_answer(state_dir, request.study)
    same = (stored is not None and stored.round == request.round
            and stored.model_sha256 == request.model_sha256)
    spend = study_spend(entries, request.study)
    if same and (spend is None or spend.last_round < request.round):
        _charge(ledger, request, stored)  # the answer was stored, its charge not yet written
        entries = ledger.entries()
        spend = study_spend(entries, request.study)
    if same and not request.plan.secure_aggregation:
        return stored
    if spend is not None and spend.evaluated:
        # Every epsilon reported after the evaluation would leave it out: the evaluation
        # closes the study at this site.
        raise BudgetError(f"Site {request.site} refuses round {request.round}: this study's "
                          "evaluation has been released, and no round follows it.")
    if spend is None:
        privacy = privacy_for_new_study()
        check_budget(entries, request.plan.epsilon, request.plan.delta, budget, request.site)
        ledger.append(_entry(RESERVE, request, 0, request.plan.epsilon, privacy))
        steps_before = 0
    elif request.round <= spend.last_round:
        raise BudgetError(_charged_twice(request, spend.last_round))
    else:
        privacy = SitePrivacy(spend.sample_rate, spend.noise_multiplier)
        steps_before = spend.steps_total
    answer = train(privacy, steps_before)
    store_answer(state_dir, request.study, answer)
    _charge(ledger, request, answer)
    return answer


def charge_evaluation(state_dir: Path, request: RoundRequest,
                      epsilon_after: Callable[[StudySpend], float],
                      anchor: LedgerAnchor = LedgerAnchor()) -> StudySpend:
    """Record the study's evaluation release on the ledger before it is computed, or
    refuse: a ledger that lost its kept head, a site that never reserved the study (its
    records are not in the cohort, and the study's ε was never committed), or one that
    already evaluated it."""
    with exclusive(state_dir):
        ledger = PrivacyLedger(state_dir, anchor.head_file)
        entries = ledger.entries()
        check_anchor(entries, anchor, ledger.path)
        spend = study_spend(entries, request.study)
        if spend is None:
            raise BudgetError(f"Site {request.site} refuses to evaluate: its ledger holds no "
                              "reserve for this study, so it took no part in it.")
        if spend.evaluated:
            raise BudgetError(f"Site {request.site} refuses a second evaluation of this study: "
                              "its ledger already charges one, and each study is evaluated "
                              "at most once.")
        ledger.append(_entry(EVALUATION, request, spend.steps_total, epsilon_after(spend), None))
        return spend


def _charged_twice(request: RoundRequest, last_round: int) -> str:
    if request.plan.secure_aggregation:
        why = ("under secure aggregation an answer is never given twice: a second secure "
               "sum over other sites would reveal this site's update by subtraction")
    else:
        why = ("this round comes with a different global model, and training it again "
               "would spend the site's budget twice")
    return (f"Site {request.site} refuses round {request.round}: its ledger already charges "
            f"round {last_round} of this study; {why}.")


def _charge(ledger: PrivacyLedger, request: RoundRequest, answer: StoredAnswer) -> None:
    ledger.append(_entry(ROUND, request, int(answer.metrics[keys.STEPS_TOTAL]),
                         float(answer.metrics[keys.EPSILON_SPENT]), None))


def _entry(kind: str, request: RoundRequest, steps_total: int, epsilon: float,
           privacy: SitePrivacy | None) -> LedgerEntry:
    return LedgerEntry(kind=kind, study=request.study, schema_sha256=request.schema_sha256,
                       round=request.round if kind == ROUND else 0, steps_total=steps_total,
                       epsilon=epsilon if math.isfinite(epsilon) else math.inf,
                       delta=request.plan.delta, rounds=request.plan.rounds, time=now_utc(),
                       noise_multiplier=privacy.noise_multiplier if privacy else 0.0,
                       sample_rate=privacy.sample_rate if privacy else 0.0)
