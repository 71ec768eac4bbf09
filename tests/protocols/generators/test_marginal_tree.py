"""The coordinator's tree sampler: post-processing that keeps structure and the schema."""

import pandas as pd
import pytest

from protocols.count_tables import build_layout
from protocols.evaluation import evaluate_cohort
from protocols.generators.marginals.tables import noisy_column_tables, noisy_pair_tables
from protocols.generators.marginals.tree import fit_tree, sample_tree
from protocols.records import check_file


@pytest.fixture(scope="module")
def pooled(demo_parsed) -> pd.DataFrame:
    return pd.concat(demo_parsed.values(), ignore_index=True)


def test_exact_tables_give_a_cohort_that_keeps_the_strong_associations(demo_schema, pooled,
                                                                       frame_parser):
    plain = build_layout(demo_schema)
    layout = plain.with_groups(plain.column_counts(pooled))
    model = fit_tree(layout, layout.counts(pooled))
    assert len(model.edges) == len(demo_schema.features) - 1
    cohort = sample_tree(model, 4000, seed=0)
    scores = evaluate_cohort(demo_schema, pooled, frame_parser(cohort, demo_schema, "cohort"), figures=False)
    assert scores["scores"]["column_shapes"] > 0.9
    assert scores["scores"]["strong_associations_kept"] >= 0.5


def test_noisy_tables_with_negative_counts_still_give_a_valid_cohort(demo_schema, pooled,
                                                                    tmp_path):
    layout = build_layout(demo_schema)
    records = pooled.iloc[:40]
    columns = noisy_column_tables(layout, records, noise_multiplier=5.0)
    staged = layout.with_groups(columns)
    tables = {**columns, **noisy_pair_tables(staged, records, noise_multiplier=5.0)}
    assert min(t.min() for t in tables.values()) < 0
    cohort = sample_tree(fit_tree(staged, tables), 500, seed=1)
    assert list(cohort.columns) == [c.name for c in demo_schema.columns]
    path = tmp_path / "cohort.csv"
    cohort.to_csv(path, index=False)
    assert check_file(path, demo_schema).ok


def test_sampling_is_reproducible_from_the_seed(demo_schema, pooled):
    layout = build_layout(demo_schema)
    model = fit_tree(layout, layout.counts(pooled))
    pd.testing.assert_frame_equal(sample_tree(model, 300, 4), sample_tree(model, 300, 4))
    assert not sample_tree(model, 300, 4).equals(sample_tree(model, 300, 5))
