"""One parser per kind of setting: a plan, a run config, a node config and node.toml read
a flag, a number or a path by the same rule, and refuse the same values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from coordinator.study import StudySettings
from node.site_config import resolve_site
from protocols.config import (read_flag, read_number, read_path, read_positive, read_text,
                              read_whole_number)
from protocols.errors import FedsynthError, PlanError
from protocols.plan import StudyPlan


@pytest.mark.parametrize("value, flag", [(True, True), (False, False), ("true", True),
                                         (" FALSE ", False), ("True", True), ("1", True),
                                         (0, False), (1, True)])
def test_a_flag_is_true_or_false_in_any_case_or_one_or_zero(value, flag):
    assert read_flag(value, "x") is flag


@pytest.mark.parametrize("value", ["no", "yes", "", 2, 0.5, None])
def test_anything_else_is_not_a_flag(value):
    with pytest.raises(PlanError, match=r"^where = .* is not true or false\.$"):
        read_flag(value, "where", PlanError)


def test_no_is_refused_as_a_flag_by_the_plan_the_node_config_and_the_run_config():
    """`federated-evaluation = "no"` once read as true at the node and as an error in
    its config: every reader now refuses it, naming where it came from."""
    with pytest.raises(PlanError, match="Study plan: secure-aggregation = 'no'"):
        StudyPlan.from_config({"secure-aggregation": "no"})
    deployed = {"data-path": "site.csv", "state-dir": "state", "epsilon-budget": 1.0,
                "delta-budget": 1e-5, "train-on-synthetic": "no"}
    with pytest.raises(FedsynthError, match="node config's train-on-synthetic = 'no'"):
        resolve_site(deployed, {})
    with pytest.raises(FedsynthError, match="run config's train-on-synthetic = 'no'"):
        resolve_site({"partition-id": 0}, {"site-data": "a.csv", "schema-path": "s.yaml",
                                           "train-on-synthetic": "no"})


@pytest.mark.parametrize("value, number", [(3, 3), (3.0, 3), ("4", 4), (" 5.0 ", 5),
                                           ("9007199254740993", 2**53 + 1)])
def test_whole_numbers(value, number):
    assert read_whole_number(value, "x") == number


@pytest.mark.parametrize("value", [2.5, "three", True, None, ""])
def test_not_whole_numbers(value):
    with pytest.raises(FedsynthError, match="is not a valid int"):
        read_whole_number(value, "x")


def test_numbers_include_infinity_and_positive_ones_exclude_it():
    assert read_number("inf", "x") == math.inf and read_number(" 0.5", "x") == 0.5
    with pytest.raises(FedsynthError, match="is not a valid float"):
        read_number(False, "x")
    assert read_positive("1e-5", "x", below=1.0) == 1e-5
    for bad in (0, -1, math.inf, 1.0):
        with pytest.raises(FedsynthError, match="finite number above 0 and below 1"):
            read_positive(bad, "x", below=1.0)
    assert read_positive("inf", "budget", infinite=True) == math.inf  # a node's "no limit"
    assert read_positive(1, "delta-budget", at_most=1.0) == 1.0


def test_text_and_paths_treat_empty_as_absent():
    assert read_text("  ") is None and read_text(None) is None and read_text(" a ") == "a"
    assert read_path("") is None
    assert read_path("~/kit") == Path.home() / "kit"


def test_the_run_config_reads_its_settings_with_the_same_parsers(demo_schema):
    settings = StudySettings.from_run_config({"round-timeout": "30", "signing-key": "",
                                              "out-dir": " out "}, demo_schema)
    assert settings.round_timeout == 30.0 and settings.signing_key is None
    assert settings.out_dir == Path("out")
    with pytest.raises(PlanError, match="Run config: round-timeout = 'soon'"):
        StudySettings.from_run_config({"round-timeout": "soon"}, demo_schema)
