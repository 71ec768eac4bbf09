"""The plan a user gets for what they leave out: the default family and when SecAgg+ is on."""

from __future__ import annotations

import pytest

from protocols.generators import FAMILIES, family_for
from protocols.plan import StudyPlan
from protocols.plan_defaults import DEFAULT_FAMILY, default_plan


def test_the_default_family_with_the_rounds_it_asks_for() -> None:
    plan, _ = default_plan(2)
    assert plan.generator == DEFAULT_FAMILY == "marginals"
    assert plan.rounds == FAMILIES[DEFAULT_FAMILY].default_rounds


@pytest.mark.parametrize("n_sites", [3, 6, 12])
def test_three_sites_or_more_get_secure_aggregation_over_every_site_with_one_colluder(
        n_sites: int) -> None:
    plan, notes = default_plan(n_sites)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, n_sites, 1)
    family_for(plan)  # keeps the family's own rule on colluders
    assert len(notes) == 1 and notes[0].startswith("secure aggregation: on by default")
    assert "a site that drops out stops the study" in notes[0]


@pytest.mark.parametrize("n_sites", [1, 2])
def test_fewer_than_three_sites_get_no_secure_aggregation_and_are_told_why(n_sites: int) -> None:
    plan, notes = default_plan(n_sites)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (
        False, StudyPlan().min_sites, 0)
    assert len(notes) == 1 and notes[0].startswith("secure aggregation: off by default")
    assert "subtract its own update from the sum" in notes[0]


def test_what_the_user_gave_wins_and_is_not_announced() -> None:
    plan, notes = default_plan(6, secure_aggregation=False)
    assert not plan.secure_aggregation and plan.min_sites == 2 and notes == []
    plan, notes = default_plan(2, secure_aggregation=True)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 2, 1)
    assert notes == []
    plan, _ = default_plan(6, min_sites=4, colluders=2, rounds=2)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 4, 2)


def test_the_vae_keeps_its_own_rounds_and_secure_aggregation_from_three_sites() -> None:
    plan, _ = default_plan(3, generator="vae")
    assert plan.rounds == StudyPlan().rounds
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 3, 1)
    family_for(plan)


def test_no_colluder_is_assumed_where_the_plans_rules_leave_no_room_for_one() -> None:
    plan, notes = default_plan(3, min_sites=1)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 1, 0)
    assert any(note.startswith("colluders: 0, not 1: with min-sites 1") for note in notes)
