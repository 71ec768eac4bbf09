"""The generator families behind one interface: the registry resolves a plan's name once,
every family answers the whole interface, and nothing outside the families' folder
compares family names."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from node.site_data import encode_site
from protocols.errors import PlanError
from protocols.generators import FAMILIES, family_for
from protocols.generators.family import GeneratorFamily
from protocols.plan import StudyPlan

ROOT = Path(__file__).resolve().parents[3]
SMALL = dict(epsilon=2.0, local_steps=2, hidden=8, latent=2, rows=60)


def _plan(name: str) -> StudyPlan:
    return StudyPlan(generator=name, rounds=FAMILIES[name].default_rounds or 2, **SMALL)


def test_family_for_refuses_an_unknown_family_naming_the_known_ones():
    with pytest.raises(PlanError, match="generator must be one of " + ", ".join(FAMILIES)):
        family_for(StudyPlan(generator="gan"))


def test_a_family_checks_its_own_rules_on_the_plan():
    with pytest.raises(PlanError, match="rounds must be 2"):
        family_for(StudyPlan(generator="marginals", rounds=3))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_runs_a_one_site_study_through_the_interface_alone(name, demo_schema,
                                                                         demo_parsed):
    """What a new family must do to join: honest releases pass its own update check, ε
    grows within the plan's, and its sampler returns the schema's columns."""
    plan = _plan(name)
    family = family_for(plan)
    assert isinstance(family, GeneratorFamily) and family.name == name
    site = encode_site(demo_parsed["hospital-02"], demo_schema, "hospital-02")
    arrays = family.global_arrays(demo_schema, plan)
    assert all(np.all(np.abs(a) <= family.secure_range) for a in arrays.values())
    privacy, history, released, spent = family.site_privacy(plan, demo_schema), {}, 0, []
    assert family.epsilon(plan, demo_schema, 0) == 0.0
    for server_round in range(1, plan.rounds + 1):
        assert family.join_problem(plan, 1) is None  # every site joins from round 1
        release = family.release(demo_schema, site, plan, privacy, released, arrays)
        assert {k: v.shape for k, v in release.arrays.items()} == \
            {k: v.shape for k, v in arrays.items()}
        assert family.update_problem(plan, server_round, arrays, release.arrays) is None
        arrays, released = release.arrays, release.steps_total
        history[server_round] = arrays
        spent.append(release.epsilon)
        assert release.epsilon == family.epsilon(plan, demo_schema, released)
    assert 0 < spent[0] <= spent[-1] <= plan.epsilon
    cohort = family.sample(demo_schema, plan, arrays, history.__getitem__)
    assert isinstance(cohort, pd.DataFrame) and len(cohort) == plan.rows
    assert list(cohort.columns) == [c.name for c in demo_schema.columns]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_without_dp_every_family_reports_infinite_epsilon(name, demo_schema):
    plan = _plan(name).with_overrides(epsilon=math.inf)
    assert family_for(plan).epsilon(plan, demo_schema, 1) == math.inf


def test_no_family_name_is_compared_outside_the_families_folder():
    """Adding a family touches `protocols/generators/` and one registry line: nothing
    else may branch on a family's name."""
    offenders = []
    for package in ("protocols", "node", "coordinator", "simulation"):
        for path in (ROOT / package).rglob("*.py"):
            if (ROOT / "protocols" / "generators") in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Compare) and any(
                        isinstance(side, ast.Constant) and side.value in FAMILIES
                        for side in [node.left, *node.comparators]):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
