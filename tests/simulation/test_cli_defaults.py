"""What `demo` and `simulate` run when the user leaves settings out, as the CLI prints it.

The study itself is stopped where the engine would start: these tests pin the plan the
command line hands to it and the lines it prints about its defaults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import simulation.cli as cli
from protocols.errors import FedsynthError
from protocols.generators import FAMILIES
from protocols.plan import StudyPlan
from protocols.plan_defaults import DEFAULT_FAMILY
from simulation.demo import DEMO_SITES


@pytest.fixture
def plans(monkeypatch) -> list[StudyPlan]:
    """The plans the CLI would run: the engine's entry points keep them and stop."""
    seen: list[StudyPlan] = []

    def keep(*args, **kwargs):
        seen.append(next(a for a in (*args, *kwargs.values()) if isinstance(a, StudyPlan)))
        raise FedsynthError("stopped before the engine")

    monkeypatch.setattr(cli, "run_demo", keep)
    monkeypatch.setattr(cli, "simulate_study", keep)
    return seen


def _simulate(n_sites: int, *extra: str) -> list[str]:
    data = [arg for i in range(n_sites) for arg in ("--data", f"site-{i}.csv")]
    return ["simulate", "--schema", "schema.yaml", *data, "--out", "out", *extra]


def test_the_demo_runs_the_default_family_under_secure_aggregation_over_every_site(
        plans, capsys, tmp_path: Path) -> None:
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 2
    plan, out = plans[-1], capsys.readouterr().out
    assert plan.generator == DEFAULT_FAMILY
    assert plan.rounds == FAMILIES[DEFAULT_FAMILY].default_rounds
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, DEMO_SITES, 1)
    assert f"secure aggregation: on by default with {DEMO_SITES} sites" in out


def test_simulate_with_three_sites_turns_secure_aggregation_on_over_all_three(
        plans, capsys) -> None:
    assert cli.main(_simulate(3)) == 2
    plan = plans[-1]
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 3, 1)
    assert "a site that drops out stops the study" in capsys.readouterr().out


def test_simulate_with_two_sites_leaves_secure_aggregation_off_and_says_why(
        plans, capsys) -> None:
    assert cli.main(_simulate(2)) == 2
    plan = plans[-1]
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (False, 2, 0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("secure aggregation: off by default with 2 site(s)")
    assert "subtract its own update from the sum" in out[0]


@pytest.mark.parametrize(("n_sites", "extra", "expected", "announced"), [
    (3, ["--no-secure-aggregation"], (False, 2, 0), False),
    (2, ["--secure-aggregation"], (True, 2, 1), False),
    (3, ["--min-sites", "2"], (True, 2, 1), True),
    (3, ["--colluders", "0"], (True, 3, 0), True),
])
def test_explicit_flags_win(plans, capsys, n_sites: int, extra: list[str], expected: tuple,
                            announced: bool) -> None:
    """A setting the user gave is never replaced, and SecAgg+ is announced only when it
    was left to the default."""
    assert cli.main(_simulate(n_sites, *extra)) == 2
    plan = plans[-1]
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == expected
    assert ("secure aggregation:" in capsys.readouterr().out) is announced


def test_no_colluder_is_assumed_where_min_sites_leaves_no_room_and_the_user_is_told(
        plans, capsys) -> None:
    assert cli.main(_simulate(3, "--min-sites", "1")) == 2
    assert (plans[-1].min_sites, plans[-1].colluders) == (1, 0)
    assert "colluders: 0, not 1: with min-sites 1" in capsys.readouterr().out


def test_the_vae_is_still_there_with_its_own_rounds(plans, capsys) -> None:
    assert cli.main(_simulate(3, "--generator", "vae")) == 2
    plan = plans[-1]
    assert (plan.generator, plan.rounds) == ("vae", StudyPlan().rounds)
    assert (plan.secure_aggregation, plan.min_sites, plan.colluders) == (True, 3, 1)
