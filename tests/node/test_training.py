"""DP-SGD at the node: accounting over all rounds, budget limits, noise from a CSPRNG."""

import math

import numpy as np
import pytest
import torch

from node.site_config import resolve_site
from protocols.errors import BudgetError
from protocols.generators.family import SitePrivacy
from protocols.generators.vae.accounting import dpsgd_epsilon, dpsgd_privacy
from protocols.generators.vae.model import build_generator, per_record_loss
from protocols.generators.vae.training import GRADIENT_NORMALISER, poisson_batches, train_round
from protocols.plan import StudyPlan
from protocols.privacy.accounting import EPSILON_TOLERANCE

# Helpers beside this file (tests/node/ is on sys.path, as pytest puts it for rootless tests).
from client_calls import tripwire_state

SMALL = dict(rounds=3, local_steps=4, sample_rate=0.4, hidden=16, latent=4)


@pytest.fixture
def site():
    """The built-in registry's first hospital (40 records), loaded as a simulated node does."""
    _, site = resolve_site({"partition-id": 0, "num-partitions": 6}, {}).load()
    assert site.name == "hospital-01" and site.n_records == 40
    return site


def _run_study(site, plan):
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = dpsgd_privacy(plan)
    steps, outcome = 0, None
    for _ in range(plan.rounds):
        outcome = train_round(model, site.encoded, plan, privacy, steps)
        steps = outcome.steps_total
    return model, privacy, outcome


def test_accountant_epsilon_for_the_steps_actually_run_stays_within_the_plan(site):
    plan = StudyPlan(epsilon=1.0, **SMALL)
    _, privacy, outcome = _run_study(site, plan)
    assert outcome.steps_total == plan.total_steps
    assert plan.epsilon - EPSILON_TOLERANCE <= outcome.epsilon <= plan.epsilon
    assert outcome.epsilon == dpsgd_epsilon(plan, outcome.steps_total)
    assert privacy == dpsgd_privacy(plan)  # the plan's, whatever the site


def test_the_mechanism_is_the_plans_at_every_site():
    """q is the plan's sample rate and σ a function of the plan: not batch / n."""
    plan = StudyPlan(epsilon=2.0, **SMALL)
    privacy = dpsgd_privacy(plan)
    assert privacy.sample_rate == plan.sample_rate
    again = StudyPlan(epsilon=2.0, **SMALL)
    assert privacy == dpsgd_privacy(again)


def test_epsilon_accumulates_over_rounds_not_per_round(site):
    plan = StudyPlan(epsilon=2.0, **SMALL)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = dpsgd_privacy(plan)
    first = train_round(model, site.encoded, plan, privacy, 0)
    second = train_round(model, site.encoded, plan, privacy, first.steps_total)
    assert first.epsilon < second.epsilon <= plan.epsilon


def test_node_refuses_to_run_more_steps_than_the_plan_allows(site):
    plan = StudyPlan(epsilon=1.0, **SMALL)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    privacy = dpsgd_privacy(plan)
    with pytest.raises(BudgetError, match="exceed"):
        train_round(model, site.encoded, plan, privacy, plan.total_steps)


def test_dp_noise_comes_from_no_seeded_generator(site):
    """Noise the coordinator could reproduce (from the shared seed, or from seeding
    torch's or numpy's generators as a library might) could be subtracted."""
    plan = StudyPlan(epsilon=1.0, **SMALL)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        np.random.seed(0)
        models.append(_run_study(site, plan)[0])
    diffs = [not torch.equal(a, b) for a, b in zip(models[0].state_dict().values(),
                                                    models[1].state_dict().values())]
    assert all(diffs)


def test_a_step_adds_gaussian_noise_of_the_plans_scale_on_a_public_normaliser(site):
    """On an empty Poisson sample the update is noise alone: N(0, (σC)²) per coordinate,
    divided by the public normaliser, never by the site's expected batch q·n."""
    from protocols.generators.vae.training import dp_setup, train_step

    plan = StudyPlan(epsilon=1.0, max_grad_norm=0.5, **SMALL)
    privacy = SitePrivacy(sample_rate=plan.sample_rate, noise_multiplier=2.0)
    model = build_generator(site.encoding, plan.hidden, plan.latent, 0)
    module, optimizer = dp_setup(model, plan, privacy)
    noise = []
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        optimizer.step = lambda: optimizer.pre_step()  # keep the noisy gradient, skip Adam
        train_step(module, optimizer, model, torch.as_tensor(site.encoded[:0]), private=True)
        noise += [p.grad.detach().flatten() for p in model.parameters()]
    spread = float(torch.cat(noise).std())
    expected = 2.0 * 0.5 / GRADIENT_NORMALISER
    assert 0.95 * expected <= spread <= 1.05 * expected
    module.remove_hooks()


def test_poisson_samples_take_each_record_with_the_plans_rate():
    batches = poisson_batches(500, 0.2)
    sizes = [len(next(batches)) for _ in range(400)]
    assert 0.19 * 500 <= np.mean(sizes) <= 0.21 * 500
    first = [next(poisson_batches(500, 0.2)) for _ in range(2)]
    assert not np.array_equal(first[0], first[1])


def test_non_private_reference_trains_the_same_model_without_noise(site):
    plan = StudyPlan(epsilon=math.inf, **SMALL)
    model, privacy, outcome = _run_study(site, plan)
    assert privacy.noise_multiplier == 0.0
    assert math.isinf(outcome.epsilon)
    assert np.isfinite(outcome.mean_loss)
    assert set(model.state_dict()) == set(build_generator(
        site.encoding, plan.hidden, plan.latent, 0).state_dict())


def test_ghost_clipping_gives_the_same_clipped_update_as_per_sample_gradients(site):
    """The fast path changes speed only: same clipped, averaged gradient as Opacus'
    reference per-sample path (noise off so the two can be compared exactly)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from protocols.generators.vae.training import dp_setup, train_step

    plan = StudyPlan(epsilon=1.0, max_grad_norm=0.05, learning_rate=1e-2, **SMALL)
    privacy = SitePrivacy(sample_rate=0.5, noise_multiplier=0.0)
    batch = torch.as_tensor(site.encoded[:24])
    fast = build_generator(site.encoding, plan.hidden, plan.latent, 3)
    module, optimizer = dp_setup(fast, plan, privacy)
    torch.manual_seed(11)
    train_step(module, optimizer, fast, batch, private=True)

    reference = build_generator(site.encoding, plan.hidden, plan.latent, 3)
    ref_module = GradSampleModule(reference, loss_reduction="mean")
    ref_optimizer = DPOptimizer(torch.optim.Adam(ref_module.parameters(), lr=plan.learning_rate),
                                noise_multiplier=0.0, max_grad_norm=plan.max_grad_norm,
                                expected_batch_size=GRADIENT_NORMALISER)
    torch.manual_seed(11)
    out, mu, logvar = ref_module(batch)
    per_record_loss(reference.encoding, batch, out, mu, logvar).mean().backward()
    ref_optimizer.step()
    # Compare the gradients the optimisers applied (Adam's first step only sees signs).
    fast_grads = dict(fast.named_parameters())
    for name, param in reference.named_parameters():
        assert param.grad is not None and fast_grads[name].grad is not None, name
        assert torch.allclose(fast_grads[name].grad, param.grad, atol=1e-7), name
        assert param.grad.abs().sum() > 0, name


def test_continuous_bins_are_a_fixed_grid_over_the_declared_range():
    from protocols.generators.vae.model import CONTINUOUS_BINS, bin_edges, value_bins

    edges = bin_edges()
    assert len(edges) == CONTINUOUS_BINS + 1
    assert edges[0] == 0.0 and edges[-1] == 1.0 and bool((edges.diff() > 0).all())
    inner = (edges[:-1] + edges[1:]) / 2
    assert torch.equal(value_bins(inner, edges), torch.arange(CONTINUOUS_BINS))
    assert value_bins(torch.tensor([0.0, 1.0]), edges).tolist() == [0, CONTINUOUS_BINS - 1]


def test_decoder_head_of_a_column_reads_only_the_columns_before_it(site):
    """Autoregressive decoder: changing column j and later ones leaves the heads of
    columns up to j unchanged, so ancestral sampling is exact."""
    from protocols.generators.vae.model import _head_width

    model = build_generator(site.encoding, 16, 4, 0)
    blocks = site.encoding.blocks
    columns = list(dict.fromkeys(b.column for b in blocks))
    x = torch.as_tensor(site.encoded[:8])
    z = torch.randn(8, 4)
    j = len(columns) // 2
    later = [i for b in blocks if columns.index(b.column) >= j for i in range(b.start, b.stop)]
    changed = x.clone()
    changed[:, later] = torch.as_tensor(site.encoded[8:16])[:, later]
    widths = [_head_width(b.kind, b.width) for b in blocks]
    upto = sum(w for b, w in zip(blocks, widths) if columns.index(b.column) <= j)
    with torch.no_grad():
        assert torch.allclose(model.decode(z, x)[:, :upto], model.decode(z, changed)[:, :upto])
        assert not torch.allclose(model.decode(z, x), model.decode(z, changed))


def test_samples_stay_in_the_unit_range_and_missing_numbers_read_as_encoded(site):
    from protocols.generators.vae.model import sample_encoded

    model = build_generator(site.encoding, 16, 4, 0)
    sample = sample_encoded(model, 500, seed=1)
    assert sample.shape == (500, site.encoding.width)
    assert sample.min() >= 0.0 and sample.max() <= 1.0
    missing = {b.column: b for b in site.encoding.blocks if b.kind == "missing"}
    for block in site.encoding.blocks:
        if block.kind == "continuous" and block.column in missing:
            flagged = sample[:, missing[block.column].start] == 1.0
            assert flagged.any() and (sample[flagged, block.start] == 0.5).all()
    decoded = site.encoding.decode(sample)
    assert list(decoded.columns) == [c.name for c in site.encoding.schema.columns]


def test_a_record_whose_loss_overflows_contributes_nothing_instead_of_poisoning_the_step(
        site):
    """Clipping bounds a record only if its gradient is finite. A model (here with weights
    of 1e20, which a node refuses as a global model) that makes one record's loss overflow
    must not turn the update into NaN: that record is left out of the step."""
    plan = StudyPlan(epsilon=2.0, rounds=1, local_steps=5, sample_rate=1.0, hidden=8,
                     latent=2)
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    model.load_state_dict(tripwire_state(site.encoding, plan, site.encoded[0], 1e20))
    outcome = train_round(model, site.encoded, plan, dpsgd_privacy(plan), 0)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert outcome.steps == plan.local_steps
