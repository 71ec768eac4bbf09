"""The marginals generator's release: data-independent tables, calibrated integer noise."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from protocols.count_tables import FINE_BINS, build_layout, fine_to_encoded, one_name, pair_name
from protocols.generators.marginals.tables import (exposed_epsilon, honest_sum_shares,
                                                   noise_scales, noisy_column_tables,
                                                   noisy_pair_tables, release_noise_multiplier,
                                                   site_noise_multiplier, stages_epsilon,
                                                   table_counts)
from protocols.errors import PlanError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.privacy.accounting import GaussianRelease, composed_epsilon
from protocols.privacy.distributed_noise import CountSensitivity, distributed_epsilon
from protocols.privacy.secure_aggregation import reconstruction_threshold

PLAN = StudyPlan(epsilon=3.0, delta=1e-5, generator="marginals", rounds=2)


@pytest.fixture(scope="module")
def parsed(demo_parsed) -> pd.DataFrame:
    return demo_parsed["hospital-06"]


def test_table_shapes_come_from_the_schema_alone(demo_schema):
    shapes = build_layout(demo_schema).table_shapes()
    assert shapes[one_name(demo_schema.column("ecog"))] == (5,)  # 0..4: one bin per value
    assert shapes[one_name(demo_schema.column("bmi"))] == (33,)  # 32 bins + missing
    assert shapes[one_name(demo_schema.column("genotype"))] == (5,)  # 4 categories + missing
    pair = pair_name(demo_schema.column("sex"), demo_schema.column("bmi"))
    assert shapes[pair] == (2, 5)  # coarse: 4 bins + missing
    n = len(demo_schema.features)
    assert len(shapes) == n + n * (n - 1) // 2


def test_counts_cover_every_record_once_and_pairs_agree_with_columns(demo_schema, parsed):
    layout = build_layout(demo_schema)
    tables = layout.counts(parsed)
    assert all(t.sum() == len(parsed) for t in tables.values())
    bmi, sex = demo_schema.column("bmi"), demo_schema.column("sex")
    fine = layout.fine_codes(parsed)["bmi"]
    coarse = np.bincount(layout.coarse(bmi, fine), minlength=layout.coarse_size(bmi))
    assert np.array_equal(tables[pair_name(sex, bmi)].sum(axis=0), coarse)


def test_two_stages_together_are_calibrated_by_the_accountant_to_the_plans_epsilon(
        demo_schema):
    layout = build_layout(demo_schema)
    z = release_noise_multiplier(PLAN, *table_counts(layout))
    both = stages_epsilon(layout, PLAN, 2)
    assert 2.995 <= both <= 3.0
    assert both == pytest.approx(composed_epsilon([GaussianRelease(z)], 1e-5), rel=1e-9)
    assert 0 < stages_epsilon(layout, PLAN, 1) < both
    reference = StudyPlan(epsilon=math.inf, generator="marginals", rounds=2)
    assert release_noise_multiplier(reference, *table_counts(layout)) == 0.0
    assert stages_epsilon(layout, reference, 2) == math.inf


def test_heterogeneous_table_noise_adds_up_to_the_calibrated_multiplier(demo_schema):
    layout = build_layout(demo_schema)
    n_one = len(layout.columns)
    n_two = n_one * (n_one - 1) // 2
    sigma_one, sigma_two = noise_scales(layout, 1.7)
    assert (n_one / sigma_one ** 2 + n_two / sigma_two ** 2) ** -0.5 == pytest.approx(1.7)
    z_one, z_two = sigma_one / math.sqrt(n_one), sigma_two / math.sqrt(n_two)
    assert (z_one ** -2 + z_two ** -2) ** -0.5 == pytest.approx(1.7)


SECURE = StudyPlan(epsilon=3.0, generator="marginals", rounds=2, secure_aggregation=True,
                   min_sites=6, colluders=1)


def test_without_secure_aggregation_each_site_adds_the_full_noise(demo_schema):
    counts = table_counts(build_layout(demo_schema))
    assert honest_sum_shares(PLAN) == 1
    assert site_noise_multiplier(PLAN, *counts) == release_noise_multiplier(PLAN, *counts)
    assert exposed_epsilon(build_layout(demo_schema), PLAN) is None


def test_under_secure_aggregation_the_honest_shares_add_up_to_the_central_noise(demo_schema):
    """6 sites must be in every sum and 1 may collude: the 5 honest shares' variances add
    up to the central variance, and the sum is charged by KLS21's bound (tau included)."""
    layout = build_layout(demo_schema)
    counts = table_counts(layout)
    z, share = release_noise_multiplier(SECURE, *counts), site_noise_multiplier(SECURE, *counts)
    assert honest_sum_shares(SECURE) == 5
    assert 5 * share ** 2 == pytest.approx(z ** 2, rel=1e-12)
    both = stages_epsilon(layout, SECURE, 2)
    assert 2.995 <= both <= 3.0
    # each stage is one release of share sigma per table, 5 honest shares, one cell per table
    sigmas = noise_scales(layout, share)
    by_stage = [distributed_epsilon(sigma, 5, SECURE.delta, CountSensitivity(math.sqrt(n), n))
                for sigma, n in zip(sigmas, counts)]
    assert max(by_stage) < both  # the two stages compose to more than either alone
    # here the shares are wide (tau ~ 0), so the sum costs what one central noise costs
    assert z == pytest.approx(release_noise_multiplier(PLAN, *counts), rel=0.01)


@pytest.mark.parametrize("min_sites", range(2, 9))
def test_every_allowed_sum_of_the_sites_shares_carries_the_central_noise(demo_schema,
                                                                        min_sites):
    """The noise each site adds (what the node draws) times the honest shares of the
    plan's worst sum is the central variance, for every tolerated number of colluders;
    colluders who would hold enough key shares to unmask a site alone are refused."""
    counts = table_counts(build_layout(demo_schema))
    for colluders in range(min_sites):
        plan = SECURE.with_overrides(min_sites=min_sites, colluders=colluders)
        if colluders >= reconstruction_threshold(min_sites):
            with pytest.raises(PlanError, match="colluders must be fewer than"):
                family_for(plan)
            continue
        central = release_noise_multiplier(plan, *counts)
        share = site_noise_multiplier(plan, *counts)
        honest = min_sites - colluders
        assert honest * share ** 2 >= central ** 2 * (1 - 1e-12)


def test_a_share_seen_alone_is_worth_a_stated_larger_epsilon(demo_schema):
    layout = build_layout(demo_schema)
    exposed = exposed_epsilon(layout, SECURE)
    assert exposed > SECURE.epsilon
    # one share of variance z²/5 alone: the full release at multiplier z/√5
    z = release_noise_multiplier(SECURE, *table_counts(layout))
    alone = composed_epsilon([GaussianRelease(z / math.sqrt(5))], SECURE.delta)
    assert exposed == pytest.approx(alone, rel=1e-9)


def test_a_release_is_noisy_unpredictable_and_exact_without_dp(demo_schema, parsed):
    layout = build_layout(demo_schema)
    exact = layout.column_counts(parsed)
    first = noisy_column_tables(layout, parsed, 1.5)
    second = noisy_column_tables(layout, parsed, 1.5)
    name = one_name(demo_schema.column("age_at_diagnosis"))
    assert not np.allclose(first[name], second[name])  # OS entropy, not a seed
    assert not np.allclose(first[name], exact[name])
    no_dp = noisy_column_tables(layout, parsed, 0.0)
    assert all(np.array_equal(no_dp[k], exact[k]) for k in exact)


def test_every_released_cell_is_a_whole_number_at_the_planned_scale(demo_schema, parsed):
    """Mironov's attack needs a float's irregular grid: a whole-number cell has none. The
    noise is discrete Gaussian of the σ the plan gives each table."""
    layout = build_layout(demo_schema)
    sigma_one = noise_scales(layout, 1.5)[0]
    exact = layout.column_counts(parsed)
    residuals = []
    for _ in range(40):
        tables = noisy_column_tables(layout, parsed, 1.5)
        for name, table in tables.items():
            assert table.dtype == np.float64 and np.array_equal(table, np.rint(table))
            residuals.append(table - exact[name])
    spread = np.concatenate([r.ravel() for r in residuals]).std()
    assert 0.95 * sigma_one <= spread <= 1.05 * sigma_one


def test_coarse_bins_are_cut_at_quantiles_of_the_column_tables(demo_schema, parsed):
    layout = build_layout(demo_schema)
    staged = layout.with_groups(layout.column_counts(parsed))
    marker = demo_schema.column("serum_marker")  # skewed: equal widths put most in bin 0
    fine = layout.fine_codes(parsed)["serum_marker"]
    present = fine < 32
    shares = np.bincount(staged.coarse(marker, fine[present]), minlength=4) / present.sum()
    assert shares.min() > 0.1  # every coarse bin holds a real share of the records
    groups = staged.groups["serum_marker"]
    assert list(groups[:32]) == sorted(groups[:32]) and groups[32] == 4  # contiguous; missing
    pairs = noisy_pair_tables(staged, parsed, 0.0)
    assert all(t.sum() == len(parsed) for t in pairs.values())
    assert {k: t.shape for k, t in pairs.items()} == {
        k: v for k, v in layout.table_shapes().items() if k.startswith("2|")}


def test_a_sampled_value_falls_back_into_the_bin_it_was_drawn_from(demo_schema, parsed):
    layout = build_layout(demo_schema)
    fine = layout.fine_codes(parsed)
    decoded = layout.encoding.decode(
        fine_to_encoded(layout, fine, np.random.default_rng(0)))
    again = layout.fine_codes(_typed(decoded, demo_schema))
    for col in layout.columns:
        if col.type in ("integer", "date") and layout.fine_size(col) - col.nullable == FINE_BINS:
            # fine bins narrower than one unit at the low end: rounding may move a neighbour
            assert np.abs(again[col.name] - fine[col.name]).max() <= 2, col.name
        else:
            assert np.array_equal(again[col.name], fine[col.name]), col.name


def _typed(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """Decoded values in the parsed form: numbers and dates as floats, labels as text."""
    out = {}
    for col in schema.features:
        values = frame[col.name]
        if col.type == "date":
            out[col.name] = [np.nan if v is None else (v - dt.date(1970, 1, 1)).days
                             for v in values]
        elif col.type == "boolean":
            out[col.name] = values.map({True: "true", False: "false"})
        elif col.is_discrete:
            out[col.name] = values
        else:
            out[col.name] = values.astype(float)
    return pd.DataFrame(out)
