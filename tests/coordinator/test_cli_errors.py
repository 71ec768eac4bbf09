"""Bad input to the CLIs: one paragraph, non-zero exit, no traceback, no output."""

import subprocess
import sys

import pytest

from node.cli import main as node_main
from simulation.cli import main as coordinator_main


@pytest.fixture
def files(tmp_path, demo_registry):
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    good = tmp_path / "good.csv"
    demo_registry.sites["hospital-01"].to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    frame = demo_registry.sites["hospital-02"].copy()
    frame.loc[frame.index[4], "subtype"] = "unknown-subtype"
    frame.to_csv(bad, index=False)
    return schema, good, bad


def test_simulate_refuses_a_bad_site_file_before_running_anything(files, tmp_path, capsys):
    schema, good, bad = files
    out = tmp_path / "out"
    code = coordinator_main(["simulate", "--schema", str(schema), "--data", str(good),
                             "--data", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.csv: row 5, column 'subtype', value 'unknown-subtype'" in err
    assert "not one of the declared categories" in err
    assert not out.exists()


def test_simulate_refuses_a_delta_that_could_release_a_record(files, tmp_path, capsys):
    """delta must be below 1/n at every site: the plan is refused, without a look at n,
    when its delta is not below one over the largest site fedsynth accepts."""
    schema, good, _ = files
    code = coordinator_main(["simulate", "--schema", str(schema), "--data", str(good),
                             "--out", str(tmp_path / "o"), "--min-sites", "1",
                             "--delta", "0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "delta must be below 1/50000" in err
    assert not (tmp_path / "o").exists()


def test_simulate_refuses_a_site_below_the_floor_on_the_operators_side(files, tmp_path,
                                                                      capsys, demo_registry):
    schema, good, _ = files
    small = tmp_path / "small.csv"
    demo_registry.sites["hospital-01"].iloc[:15].to_csv(small, index=False)
    code = coordinator_main(["simulate", "--schema", str(schema), "--data", str(good),
                             "--data", str(small), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "small.csv: too small" in err and "fewer than the 20" in err


def test_simulate_refuses_a_contradictory_schema(files, tmp_path, capsys):
    _, good, _ = files
    schema = tmp_path / "broken.yaml"
    schema.write_text("columns:\n  - {name: age, type: integer, min: 90, max: 0}\n")
    code = coordinator_main(["simulate", "--schema", str(schema), "--data", str(good),
                             "--out", str(tmp_path / "o"), "--min-sites", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "column 'age'" in err and "greater than max" in err


def test_node_check_names_file_row_column_value_and_rule(files, capsys):
    schema, _, bad = files
    assert node_main(["check", "--schema", str(schema), "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "row 5, column 'subtype', value 'unknown-subtype'" in err and "1 problem(s)" in err


def test_node_check_accepts_a_valid_file(files, capsys):
    schema, good, _ = files
    assert node_main(["check", "--schema", str(schema), "--data", str(good)]) == 0
    assert "all valid" in capsys.readouterr().out


def test_errors_reach_the_user_without_a_traceback(files, tmp_path):
    schema, _, _ = files
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from node.cli import main; sys.exit(main())",
         "check", "--schema", str(schema), "--data", str(tmp_path / "missing.csv")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.csv does not exist" in result.stderr


def test_simulate_never_overwrites_an_input_file(files, capsys):
    schema, good, _ = files
    own = good.with_name("synthetic.csv")
    own.write_bytes(good.read_bytes())
    before = own.read_bytes()
    code = coordinator_main(["simulate", "--schema", str(schema), "--data", str(own),
                             "--out", str(own.parent), "--min-sites", "1"])
    assert code == 2 and "would be overwritten" in capsys.readouterr().err
    assert own.read_bytes() == before


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_a_plan_its_generator_family_refuses_leaves_nothing_behind(files, tmp_path, capsys,
                                                                   command):
    """The family's own rules are checked before the demo writes its registry, so the
    corrected command can run in the same folder."""
    schema, good, _ = files
    out = tmp_path / "out"
    inputs = [] if command == "demo" else ["--schema", str(schema), "--data", str(good),
                                           "--data", str(good)]
    code = coordinator_main([command, *inputs, "--out", str(out), "--generator", "marginals",
                             "--rounds", "3"])
    assert code == 2
    assert "rounds must be 2" in capsys.readouterr().err
    assert not out.exists()
