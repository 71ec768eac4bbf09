"""The coordinator's graphical model: post-processing that keeps structure and the schema."""

import itertools

import numpy as np
import pandas as pd
import pytest

from protocols.count_tables import build_layout
from protocols.evaluation import evaluate_cohort
from protocols.generators.marginals.graphical import _draw_rows, fit_model, sample_model
from protocols.generators.marginals.tables import noisy_column_tables, noisy_pair_tables
from protocols.records import check_file
from protocols.schema_roles import EvaluationRoles


@pytest.fixture(scope="module")
def pooled(demo_parsed) -> pd.DataFrame:
    return pd.concat(demo_parsed.values(), ignore_index=True)


@pytest.fixture(scope="module")
def exact(demo_schema, pooled):
    plain = build_layout(demo_schema)
    layout = plain.with_groups(plain.column_counts(pooled))
    return layout, fit_model(layout, layout.counts(pooled))


def test_exact_tables_give_a_cohort_that_keeps_the_strong_associations(demo_schema, pooled,
                                                                       exact, frame_parser):
    layout, model = exact
    names = [c.name for c in demo_schema.features]
    assert set(model.pairs) <= set(itertools.combinations(names, 2))
    assert len(model.pairs) > 2 * (len(names) - 1)  # far more than a tree's n − 1
    cohort = sample_model(model, 4000, seed=0)
    scores = evaluate_cohort(demo_schema, pooled, frame_parser(cohort, demo_schema, "cohort"),
                             figures=False)
    assert scores["scores"]["column_shapes"] > 0.9
    # A tree keeps n − 1 pairs; the model keeps them all (the tree scored 0.5 here).
    assert scores["scores"]["strong_associations_kept"] >= 0.8


def test_the_model_stays_under_its_cell_cap_by_dropping_the_weakest_pairs(demo_schema, pooled):
    plain = build_layout(demo_schema)
    layout = plain.with_groups(plain.column_counts(pooled))
    small = fit_model(layout, layout.counts(pooled), max_cells=400)
    assert 0 < len(small.pairs) < len(demo_schema.features) * (len(demo_schema.features) - 1) // 2
    assert sum(d.size for d in small.distributions) <= 400
    assert {name for clique in small.cliques for name in clique} == {
        c.name for c in demo_schema.features}


def test_noisy_tables_with_negative_counts_still_give_a_valid_cohort(demo_schema, pooled,
                                                                    tmp_path):
    layout = build_layout(demo_schema)
    records = pooled.iloc[:40]
    columns = noisy_column_tables(layout, records, noise_multiplier=5.0)
    staged = layout.with_groups(columns)
    tables = {**columns, **noisy_pair_tables(staged, records, noise_multiplier=5.0)}
    assert min(t.min() for t in tables.values()) < 0
    cohort = sample_model(fit_model(staged, tables), 500, seed=1)
    assert list(cohort.columns) == [c.name for c in demo_schema.columns]
    path = tmp_path / "cohort.csv"
    cohort.to_csv(path, index=False)
    assert check_file(path, demo_schema).ok


def test_sampling_is_reproducible_from_the_seed(exact):
    _, model = exact
    pd.testing.assert_frame_equal(sample_model(model, 300, 4), sample_model(model, 300, 4))
    assert not sample_model(model, 300, 4).equals(sample_model(model, 300, 5))


def test_each_record_draws_from_its_own_row_in_proportion():
    conditional = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    row = np.repeat([0, 1, 2], 40_000)
    drawn = _draw_rows(np.random.default_rng(0), conditional, row)
    first, empty, last = drawn[:40_000], drawn[40_000:80_000], drawn[80_000:]
    assert set(first) == {0, 2} and abs(np.mean(first == 2) - 0.75) < 0.01
    assert set(empty) == {0, 1, 2}  # a row the model left empty: every cell possible
    assert set(last) == {1}


def test_under_a_tight_cap_the_outcome_columns_pairs_enter_first(demo_schema, pooled):
    plain = build_layout(demo_schema)
    layout = plain.with_groups(plain.column_counts(pooled))
    tables = layout.counts(pooled)
    # The column whose pairs the strongest-first order keeps least of under the cap.
    by_strength = fit_model(layout, tables, max_cells=400)
    names = [c.name for c in demo_schema.features]
    weakest = min(names, key=lambda n: sum(n in pair for pair in by_strength.pairs))
    outcome_first = fit_model(layout, tables, max_cells=400, outcome=[weakest])
    with_outcome = [pair for pair in outcome_first.pairs if weakest in pair]
    assert len(with_outcome) > sum(weakest in pair for pair in by_strength.pairs)
    assert outcome_first.pairs[:len(with_outcome)] == tuple(with_outcome)
    assert sum(d.size for d in outcome_first.distributions) <= 400


def test_the_outcome_columns_are_the_schemas_declared_roles(demo_schema):
    assert demo_schema.roles.columns == ("treated", "survival_months", "death")
    assert EvaluationRoles().columns == ()
