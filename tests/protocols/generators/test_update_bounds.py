"""The bound on what one honest round can change: never exceeded by real training, and
tight enough that a reply far outside it is recognisably not an honest one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from node.site_data import encode_site
from protocols.count_tables import build_layout
from protocols.encoding import build_encoding
from protocols.generators import family_for
from protocols.generators.marginals.release import release_marginals
from protocols.generators.vae.accounting import dpsgd_privacy
from protocols.generators.vae.bounds import ADAM_BETAS, adam_step_bound, largest_weight_change
from protocols.generators.vae.model import build_generator
from protocols.generators.vae.training import train_round
from protocols.plan import StudyPlan

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")


def update_problem(plan, server_round, sent, reply):
    """What the coordinator asks of the plan's family about one reply."""
    return family_for(plan).update_problem(plan, server_round, sent, reply)


@given(st.lists(st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), min_size=3, max_size=3),
                min_size=1, max_size=25))
def test_adam_never_moves_a_weight_further_than_the_bound_whatever_the_gradients(gradients):
    weights = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.02, betas=ADAM_BETAS)
    for gradient in gradients:
        weights.grad = torch.tensor(gradient, dtype=torch.float32)
        optimizer.step()
    plan = StudyPlan(learning_rate=0.02, local_steps=len(gradients))
    assert float(weights.detach().abs().max()) <= largest_weight_change(plan) * 1.0001


def test_the_bound_of_the_first_step_is_the_learning_rate_and_grows_towards_adams_limit():
    assert adam_step_bound(1) == pytest.approx(1.0)
    limit = (1 - 0.9) / math.sqrt(1 - 0.999) / math.sqrt(1 - 0.9 ** 2 / 0.999)
    assert adam_step_bound(10_000) == pytest.approx(limit, rel=1e-3)


@pytest.mark.parametrize("epsilon", [3.0, math.inf])
def test_an_honest_round_stays_within_the_bound_and_uses_much_of_it(demo_schema, demo_parsed,
                                                                     epsilon):
    plan = StudyPlan(epsilon=epsilon, local_steps=10, hidden=16, latent=4)
    site = encode_site(demo_parsed["hospital-04"], demo_schema, "hospital-04")
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    sent = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    train_round(model, site.encoded, plan, dpsgd_privacy(plan), 0)
    reply = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert update_problem(plan, 1, sent, reply) is None
    moved = max(float(np.abs(reply[k] - sent[k]).max()) for k in sent)
    assert moved > 0.5 * largest_weight_change(plan)


def test_a_scaled_up_update_is_recognised(demo_schema):
    plan = StudyPlan(local_steps=10, hidden=16, latent=4)
    model = build_generator(build_encoding(demo_schema), plan.hidden, plan.latent, plan.seed)
    sent = {k: v.numpy() for k, v in model.state_dict().items()}
    step = largest_weight_change(plan)
    reply = {k: v + (3 * step if k.endswith("bias") else 0.0) for k, v in sent.items()}
    assert "beyond" in update_problem(plan, 1, sent, reply)


MARGINALS = StudyPlan(epsilon=2.0, rounds=2, generator="marginals")


@pytest.fixture(scope="module")
def honest_stages(demo_schema, demo_parsed):
    site = encode_site(demo_parsed["hospital-02"], demo_schema, "hospital-02")
    initial = {name: np.zeros(shape) for name, shape in
               build_layout(demo_schema).table_shapes().items()}
    first = release_marginals(demo_schema, site, MARGINALS, 0, initial).arrays
    second = release_marginals(demo_schema, site, MARGINALS, 1, first).arrays
    return initial, first, second


def test_honest_marginal_releases_pass(honest_stages):
    initial, first, second = honest_stages
    assert update_problem(MARGINALS, 1, initial, first) is None
    assert update_problem(MARGINALS, 2, first, second) is None


@pytest.mark.parametrize("stage, change, why", [
    (1, lambda t: {**t, "1|sex": t["1|sex"] - 1e4}, "below what Gaussian noise"),
    (1, lambda t: {**t, "1|sex": t["1|sex"] + np.eye(1, t["1|sex"].size)[0] * 1e12},
     "one record set cannot give both"),
    # a million more records in every table, consistently: a site beyond MAX_SITE_RECORDS
    (1, lambda t: {k: (v + np.rint(1e6 / v.size) if k.startswith("1|") else v)
                   for k, v in t.items()}, "more than the 50000 a site may hold"),
    (2, lambda t: {k: (v + np.rint(1e6 / v.size) if k.startswith("2|") else v)
                   for k, v in t.items()}, "more than the 50000"),
    # a float's low bits are what Mironov's attack reads: only whole counts are released
    (1, lambda t: {**t, "1|sex": t["1|sex"] + 0.25}, "not whole numbers"),
    (1, lambda t: {k: (v + 1 if k.startswith("2|") else v) for k, v in t.items()}, "zeros"),
    (2, lambda t: {k: (v + 1 if k.startswith("1|") else v) for k, v in t.items()}, "echoed"),
])
def test_a_tampered_marginal_release_is_recognised(honest_stages, stage, change, why):
    initial, first, second = honest_stages
    sent, reply = (initial, first) if stage == 1 else (first, second)
    assert why in update_problem(MARGINALS, stage, sent, change(reply))


@given(st.floats(-50, 50), st.floats(1e-6, 1e-1),
       st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=30))
def test_float32_rounding_of_large_weights_never_makes_an_honest_step_look_too_long(
        start, learning_rate, gradients):
    weights = torch.full((1,), start, dtype=torch.float32, requires_grad=True)
    sent = {"w": weights.detach().numpy().copy()}
    optimizer = torch.optim.Adam([weights], lr=learning_rate, betas=ADAM_BETAS)
    for gradient in gradients:
        weights.grad = torch.tensor([gradient], dtype=torch.float32)
        optimizer.step()
    plan = StudyPlan(learning_rate=learning_rate, local_steps=len(gradients))
    assert update_problem(plan, 1, sent, {"w": weights.detach().numpy()}) is None
