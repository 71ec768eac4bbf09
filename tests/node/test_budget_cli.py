"""`fedsynth-node budget`: what the site's real ledger file says is spent and left."""

import json

import pytest

from node.cli import main
from node.ledger.privacy_ledger import PrivacyLedger
from protocols.privacy.ledger import RESERVE, ROUND, LedgerEntry

SCHEMA = "ab" * 32


def _entry(kind, study, round_=0, epsilon=3.0, steps=0):
    return LedgerEntry(kind=kind, study=study, schema_sha256=SCHEMA, round=round_,
                       steps_total=steps, epsilon=epsilon, delta=1e-5, rounds=3,
                       time="2026-11-23T10:00:00+00:00",
                       noise_multiplier=1.2 if kind == RESERVE else 0.0,
                       sample_rate=0.3 if kind == RESERVE else 0.0)


@pytest.fixture
def state_dir(tmp_path):
    ledger = PrivacyLedger(tmp_path)
    for entry in [_entry(RESERVE, "1" * 64, epsilon=3.0),
                  *[_entry(ROUND, "1" * 64, r, 0.9 * r, 20 * r) for r in (1, 2, 3)],
                  _entry(RESERVE, "2" * 64, epsilon=2.0),
                  _entry(ROUND, "2" * 64, 1, 1.1, 20)]:
        ledger.append(entry)
    return tmp_path


def test_budget_shows_each_study_and_what_is_committed_spent_and_left(state_dir, capsys):
    assert main(["budget", "--state-dir", str(state_dir), "--epsilon-budget", "10"]) == 0
    out = capsys.readouterr().out
    assert "6 entries, hash chain intact" in out
    assert "111111111111  abababababab" in out and "3/3" in out and "1/3" in out
    assert "committed 5 by 2 studies (spent so far 3.8); left 5." in out
    assert "Delta budget 1; committed 2e-05; left 1." in out


def test_budget_composes_delta_against_the_sites_delta_budget(state_dir, capsys):
    assert main(["budget", "--state-dir", str(state_dir), "--epsilon-budget", "10",
                 "--delta-budget", "1e-4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["delta_committed"] == pytest.approx(2e-5)
    assert report["delta_left"] == pytest.approx(8e-5)


def test_budget_as_json_for_monitoring(state_dir, capsys):
    assert main(["budget", "--state-dir", str(state_dir), "--epsilon-budget", "10",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["committed"], report["left"], report["intact"]) == (5.0, 5.0, True)
    assert [s["rounds_answered"] for s in report["studies"]] == [3, 1]
    assert report["studies"][0]["epsilon_spent"] == pytest.approx(2.7)


def test_budget_shows_a_broken_chain_up_to_the_break_and_exits_non_zero(state_dir, capsys):
    path = state_dir / "privacy-ledger.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"epsilon": 2.0', '"epsilon": 0.5')  # someone lowered a charge
    path.write_text("\n".join(lines) + "\n")
    assert main(["budget", "--state-dir", str(state_dir), "--epsilon-budget", "10"]) == 2
    captured = capsys.readouterr()
    assert "4 entries, hash chain BROKEN" in captured.out
    assert "committed 3 by 1 study" in captured.out
    assert "line 5: the privacy ledger's entry does not follow" in captured.err
    assert "Traceback" not in captured.err


def test_budget_of_a_site_that_never_ran_a_study(tmp_path, capsys):
    assert main(["budget", "--state-dir", str(tmp_path), "--epsilon-budget", "4"]) == 0
    assert "No study has run at this site yet" in capsys.readouterr().out


def test_budget_without_a_kit_or_a_state_folder_says_what_it_needs(capsys):
    assert main(["budget"]) == 2
    assert "needs --kit KIT, or both --state-dir and --epsilon-budget" in capsys.readouterr().err


def test_a_damaged_byte_in_the_ledger_is_a_broken_chain_not_a_crash(state_dir, capsys):
    path = state_dir / "privacy-ledger.jsonl"
    data = bytearray(path.read_bytes())
    data[data.index(b'"delta"', len(data) // 2)] = 0xFF
    path.write_bytes(bytes(data))
    assert main(["budget", "--state-dir", str(state_dir), "--epsilon-budget", "10"]) == 2
    captured = capsys.readouterr()
    assert "hash chain BROKEN" in captured.out and "Traceback" not in captured.err


def test_an_unlimited_budget_is_left_unlimited_even_after_a_non_private_study(tmp_path,
                                                                              capsys):
    PrivacyLedger(tmp_path).append(_entry(RESERVE, "3" * 64, epsilon=float("inf")))
    assert main(["budget", "--state-dir", str(tmp_path), "--epsilon-budget", "inf",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["committed"], report["left"]) == ("inf", "inf")
