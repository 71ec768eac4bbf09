"""The bad-input corpus (tests/corpus/cases.yaml) through the real command-line tools.

Every case is a real file a hospital or a consortium might hand the node: records
with missing, extra, misspelt or identifying columns, cells that break the schema,
files that are not CSV at all, and schemas that contradict themselves or are not
YAML. Each goes through `fedsynth-node check` and — records and schemas alike —
`fedsynth-coordinator simulate`, in-process, and must be refused with a non-zero
exit and one line naming the file, the row or line, the column, the value and the
rule; nothing may be written anywhere and no input may change. The valid
variants (UTF-8 byte order mark, CRLF line ends) must be accepted and read exactly
like the plain file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from node.cli import main as node_main
from protocols.records import check_file
from protocols.schema import load_schema
from simulation.cli import main as coordinator_main

CORPUS = Path(__file__).parents[1] / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
SCHEMA = "schema.yaml"
VALID = "records/valid.csv"
SPARSE_SIZE = 20 * 2**30


def _ids(cases: list[dict]) -> list[str]:
    return [case["name"] for case in cases]


def _make(case: dict, folder: Path) -> Path:
    """The records file of `case`: committed in the corpus, or created in `folder`."""
    make = case.get("make")
    if make is None:
        return CORPUS / case.get("data", VALID)
    path = folder / case["data"]
    if make == "sparse-20GiB":
        with path.open("wb") as handle:
            handle.truncate(SPARSE_SIZE)  # sparse: no disk, no time
    else:
        table = pd.read_csv(CORPUS / make["parquet-of"], dtype=str, keep_default_na=False)
        table.to_parquet(path)
    return path


def _state(paths: list[Path]) -> dict[str, tuple]:
    """What each file is now: size and mtime, and its bytes' hash unless it is huge."""
    state = {}
    for path in paths:
        info = path.stat()
        digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                  if info.st_size < 2**20 else None)
        state[str(path)] = (info.st_size, info.st_mtime_ns, digest)
    return state


def _corpus_and(*paths: Path) -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file()) + list(paths)


def _assert_refusal(err: str, case: dict, file_name: str) -> None:
    """One line, no traceback, naming the file and each fragment the case lists."""
    message = err.strip()
    assert message and "\n" not in message, err
    assert "Traceback" not in err
    assert file_name in message, message
    for key in ("where", "value", "rule"):
        if key in case:
            assert str(case[key]) in message, (key, message)
    if "column" in case:
        assert f"column '{case['column']}'" in message, message
    if "never" in case:
        assert str(case["never"]) not in err, message


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so a stray output file would show."""
    (tmp_path / "inputs").mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def _refused_everywhere(case: dict, schema: Path, data_paths: list[Path], node_exit: int,
                        workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run `check` on the last file and `simulate` on all; assert both refuse cleanly."""
    named = data_paths[-1].name if "schema" not in case else schema.name
    before = _state(_corpus_and(*data_paths))
    code = node_main(["check", "--schema", str(schema), "--data", str(data_paths[-1])])
    captured = capsys.readouterr()
    assert code == node_exit, captured.err
    _assert_refusal(captured.err, case, named)
    assert "never" not in case or str(case["never"]) not in captured.out

    out = workspace / "out"
    argv = ["simulate", "--schema", str(schema), "--out", str(out), "--min-sites", "1"]
    for path in data_paths:
        argv += ["--data", str(path)]
    code = coordinator_main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _assert_refusal(captured.err, case, named)

    assert not out.exists() or not any(out.iterdir())
    assert not any((workspace / "cwd").iterdir())
    assert _state(_corpus_and(*data_paths)) == before


@pytest.mark.parametrize("case", CASES["records"], ids=_ids(CASES["records"]))
def test_bad_records_are_refused_naming_file_row_column_value_and_rule(
        case: dict, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _make(case, workspace / "inputs")
    # A good site first: one bad site must stop the whole study before anything runs.
    _refused_everywhere(case, CORPUS / SCHEMA, [CORPUS / VALID, data], case["exit"],
                        workspace, capsys)


@pytest.mark.parametrize("case", CASES["schemas"], ids=_ids(CASES["schemas"]))
def test_bad_schemas_are_refused_naming_file_line_column_value_and_rule(
        case: dict, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused_everywhere(case, CORPUS / case["schema"], [CORPUS / VALID], 2, workspace, capsys)


@pytest.mark.parametrize("name", CASES["valid"])
def test_byte_order_mark_and_crlf_are_valid_and_read_like_the_plain_file(
        name: str, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = CORPUS / SCHEMA
    assert node_main(["check", "--schema", str(schema), "--data", str(CORPUS / name)]) == 0
    assert "all valid" in capsys.readouterr().out
    plain = check_file(CORPUS / VALID, load_schema(schema))
    variant = check_file(CORPUS / name, load_schema(schema))
    pd.testing.assert_frame_equal(variant.parsed, plain.parsed)


def test_the_corpus_has_at_least_thirty_distinct_bad_cases() -> None:
    bad = CASES["records"] + CASES["schemas"]
    assert len(bad) >= 30
    assert len({case["name"] for case in bad}) == len(bad)
    inputs = [(case.get("schema", SCHEMA), case.get("data", VALID), str(case.get("make")))
              for case in bad]
    assert len(set(inputs)) == len(inputs)
    committed = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    used = {s for s, d, _ in inputs} | {d for _, d, _ in inputs} | set(CASES["valid"])
    assert used - committed <= {c["data"] for c in bad if "make" in c}
    assert committed - used <= {"cases.yaml"}, "a corpus file no case uses"


def test_the_node_refuses_garbage_without_a_traceback_end_to_end() -> None:
    """The real interpreter, as a steward runs it: exit status and stderr only."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "check", "--schema", str(CORPUS / SCHEMA),
         "--data", str(CORPUS / "records" / "binary_garbage.csv")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "binary_garbage.csv, line 1: byte 0x89 is not UTF-8 text" in result.stderr
