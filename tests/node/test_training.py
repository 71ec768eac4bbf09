"""DP-SGD at the node: accounting over all rounds, budget limits, honest noise."""

import math

import numpy as np
import pytest
import torch

from node.site_data import encode_site
from node.training import SitePrivacy, train_round
from protocols.accounting import epsilon_spent
from protocols.errors import BudgetError, PlanError
from protocols.generator import build_generator
from protocols.plan import StudyPlan
from protocols.records import validate_records

SMALL = dict(rounds=3, local_steps=4, batch_size=16, hidden=16, latent=4)


@pytest.fixture
def site(demo_registry, demo_schema):
    frame = demo_registry.sites["hospital-01"].drop(columns=["patient_id"])
    text = frame.astype(object).where(frame.notna(), "").astype(str)
    validation = validate_records(text, demo_schema, "hospital-01")
    assert validation.ok
    return encode_site(validation.parsed, demo_schema, "hospital-01")


def _run_study(site, plan):
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = SitePrivacy.for_site(plan, site.n_records, site.name)
    steps, outcome = 0, None
    for _ in range(plan.rounds):
        outcome = train_round(model, site.encoded, plan, privacy, steps)
        steps = outcome.steps_total
    return model, privacy, outcome


def test_accountant_epsilon_for_the_steps_actually_run_stays_within_the_plan(site):
    plan = StudyPlan(epsilon=1.0, **SMALL)
    _, privacy, outcome = _run_study(site, plan)
    assert outcome.steps_total == plan.total_steps
    assert outcome.epsilon <= plan.epsilon
    assert outcome.epsilon > 0.9 * plan.epsilon  # the noise is not wastefully large
    expected = epsilon_spent(privacy.noise_multiplier, privacy.sample_rate,
                             outcome.steps_total, plan.delta)
    assert outcome.epsilon == pytest.approx(expected)


def test_epsilon_accumulates_over_rounds_not_per_round(site):
    plan = StudyPlan(epsilon=2.0, **SMALL)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = SitePrivacy.for_site(plan, site.n_records, site.name)
    first = train_round(model, site.encoded, plan, privacy, 0)
    second = train_round(model, site.encoded, plan, privacy, first.steps_total)
    assert first.epsilon < second.epsilon <= plan.epsilon


def test_node_refuses_to_run_more_steps_than_the_plan_allows(site):
    plan = StudyPlan(epsilon=1.0, **SMALL)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = SitePrivacy.for_site(plan, site.n_records, site.name)
    with pytest.raises(BudgetError, match="exceed"):
        train_round(model, site.encoded, plan, privacy, plan.total_steps)


def test_site_refuses_delta_not_below_one_over_n(site):
    plan = StudyPlan(epsilon=1.0, delta=1.0 / site.n_records, **SMALL)
    with pytest.raises(PlanError, match="1/n"):
        SitePrivacy.for_site(plan, site.n_records, site.name)


def test_dp_noise_is_not_derived_from_the_plan_seed(site):
    """Noise the coordinator could reproduce from the shared seed could be subtracted."""
    plan = StudyPlan(epsilon=1.0, **SMALL)
    first, _, _ = _run_study(site, plan)
    second, _, _ = _run_study(site, plan)
    diffs = [not torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                    second.state_dict().values())]
    assert any(diffs)


def test_non_private_reference_trains_the_same_model_without_noise(site):
    plan = StudyPlan(epsilon=math.inf, **SMALL)
    model, privacy, outcome = _run_study(site, plan)
    assert privacy.noise_multiplier == 0.0
    assert math.isinf(outcome.epsilon)
    assert np.isfinite(outcome.mean_loss)
    assert set(model.state_dict()) == set(build_generator(
        site.encoding, plan.hidden, plan.latent, 0).state_dict())
