"""A privacy ledger rolled back is refused, on real files, by the real ClientApp and CLI.

The site's kit is provisioned for real; its node answers studies through the real
ClientApp with the kit's state folder and head file (as `fedsynth-node start` passes
them), and its ledger is then deleted, cut short, or rewritten with a recomputed
chain, as an operator restoring an old backup or an attacker dropping studies would.
The node must refuse each, whether the coordinator presents the last head it saw or
the node's own head file alone notices; `fedsynth-node budget` (a separate process)
exits non-zero on each; a coordinator presenting a forged head gets a refusal and
nothing else; `verify --kit` compares the manifest's claims with the ledger.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from cli_process import run_cli
from client_calls import issued, train_message
from coordinator.cohort import release_cohort
from coordinator.ledger_heads import presented, read_known_heads, record_heads
from coordinator.provisioning.signing_key import load_signing_key
from node.client_app import SiteRefusal, build_client_app
from node.kit import read_kit
from node.ledger.privacy_ledger import PrivacyLedger
from protocols import messages as keys
from protocols.plan import StudyPlan
from protocols.privacy.ledger import entry_line
from protocols.release.app_bundle import release_sha256
from protocols.release.manifest import SitePrivacySpent, StudyRun
from simulation.cli import main as coordinator_main

STUDIES = [issued(StudyPlan(epsilon=1.0, rounds=1, local_steps=2, hidden=8, latent=2, seed=s))
           for s in (1, 2, 3)]


@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


@pytest.fixture
def site(tmp_path, demo_registry):
    """A provisioned site kit with its schema and records, and its node's context."""
    kits = tmp_path / "kits"
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(kits)]) == 0
    kit_dir = kits / "siteA"
    (kit_dir / "schema.yaml").write_text(demo_registry.schema_yaml)
    records = tmp_path / "records.csv"
    demo_registry.sites["hospital-03"].to_csv(records, index=False)
    kit = read_kit(kit_dir)
    config = {"schema-path": str(kit_dir / "schema.yaml"), "data-path": str(records),
              "site-name": "siteA", "state-dir": str(kit.state_dir),
              "ledger-head-file": str(kit.ledger_head_file), "epsilon-budget": 10.0,
              "delta-budget": 1e-3}
    return kit, config, kits


def _train(site, plan, heads=None, server_round=1):
    """The real ClientApp's reply to `plan`, with the heads a coordinator presents."""
    from flwr.app import Context, RecordDict

    kit, config, _ = site
    schema = _schema(kit)
    message, _ = train_message(schema, plan, server_round=server_round)
    message.content[keys.PLAN].update(presented(heads or {}))
    context = Context(run_id=1, node_id=1, node_config=dict(config), state=RecordDict(),
                      run_config={})
    return build_client_app()(message, context)


def _schema(kit):
    from protocols.schema import load_schema
    return load_schema(kit.directory / "schema.yaml")


def _refused(call, caplog, detail):
    with caplog.at_level(logging.ERROR, logger="node.client_app"):
        caplog.clear()
        with pytest.raises(SiteRefusal) as raised:
            call()
    assert str(raised.value) == keys.DECLINED  # the coordinator learns nothing more
    assert re.search(detail, caplog.text), caplog.text
    return caplog.text


def _three_studies(site) -> str:
    """Three studies answered; the head the coordinator saw after the last one."""
    reply = None
    for plan in STUDIES:
        reply = _train(site, plan)
    return str(reply.content[keys.SITE][keys.LEDGER_HEAD])


def _ledger(site) -> Path:
    return site[0].state_dir / "privacy-ledger.jsonl"


def _rewrite_without_first_study(site) -> None:
    """Drop the first study and recompute the chain: a valid ledger, ε 1 less spent."""
    ledger = PrivacyLedger(site[0].state_dir)
    kept = [e for e in ledger.entries() if e.study != ledger.entries()[0].study]
    _ledger(site).unlink()
    for entry in kept:
        ledger.append(entry)


def _truncate(site) -> None:
    lines = _ledger(site).read_text().splitlines()
    _ledger(site).write_text("\n".join(lines[:2]) + "\n")


def _delete(site) -> None:
    shutil.rmtree(site[0].state_dir)


ROLLBACKS = {"rewritten": _rewrite_without_first_study, "truncated": _truncate,
             "deleted": _delete}


def test_the_head_file_follows_every_entry_and_the_reply_carries_it(site):
    head = _three_studies(site)
    last = json.loads(_ledger(site).read_text().splitlines()[-1])["hash"]
    assert head == last == site[0].ledger_head_file.read_text().strip()
    assert not site[0].ledger_head_file.is_relative_to(site[0].state_dir)


@pytest.mark.parametrize("rollback", ROLLBACKS)
def test_a_rolled_back_ledger_is_refused_when_the_coordinator_presents_its_last_head(
        site, caplog, rollback):
    head = _three_studies(site)
    ROLLBACKS[rollback](site)
    site[0].ledger_head_file.unlink()  # the node's own anchor lost as well: only the
    before = _ledger(site).read_bytes() if _ledger(site).exists() else b""  # coordinator's
    fourth = StudyPlan(epsilon=1.0, rounds=1, local_steps=2, hidden=8, latent=2, seed=4)
    log = _refused(lambda: _train(site, fourth, {"siteA": head}), caplog,
                   r"no longer holds the entry .* the consortium coordinator")
    assert "restores the ledger" in log and "Do not start a new, empty ledger" in log
    after = _ledger(site).read_bytes() if _ledger(site).exists() else b""
    assert after == before  # nothing reserved, nothing trained


@pytest.mark.parametrize("rollback", ROLLBACKS)
def test_a_rolled_back_ledger_is_refused_by_the_nodes_own_head_file(site, caplog, rollback):
    _three_studies(site)
    ROLLBACKS[rollback](site)
    fourth = StudyPlan(epsilon=1.0, rounds=1, local_steps=2, hidden=8, latent=2, seed=4)
    _refused(lambda: _train(site, fourth), caplog,  # no coordinator involved
             r"no longer holds the entry .* this node's head file")


@pytest.mark.parametrize("rollback", ROLLBACKS)
def test_budget_exits_non_zero_on_a_rolled_back_ledger(site, rollback):
    _three_studies(site)
    kit_dir = site[0].directory
    good = run_cli("fedsynth-node", "budget", "--kit", kit_dir)
    assert good.returncode == 0, good.stderr
    assert "committed 3 by 3 studies" in good.stdout
    ROLLBACKS[rollback](site)
    result = run_cli("fedsynth-node", "budget", "--kit", kit_dir)
    assert result.returncode == 2, result.stdout
    assert "no longer holds the entry" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one paragraph
    assert "NOT TO BE TRUSTED" in result.stdout


def test_a_forged_head_only_makes_the_node_refuse(site, caplog):
    """A head is not secret and proves nothing: an unknown one gets a refusal, no
    charge, and no lasting change; the next honest request is answered."""
    _train(site, STUDIES[0])
    before = _ledger(site).read_bytes()
    _refused(lambda: _train(site, STUDIES[1], {"siteA": "f" * 64}), caplog, "no longer holds")
    assert _ledger(site).read_bytes() == before
    other_sites = {"siteB": "e" * 64, "siteC": "0" * 64}  # heads of others: not ours to check
    assert not _train(site, STUDIES[1], other_sites).has_error()


@pytest.mark.parametrize("listed", [["siteA"], ["siteA=" + "A" * 64], ["siteA=xyz"],
                                    ["siteA=" + "a" * 64, "siteA=" + "b" * 64], [7]])
def test_malformed_heads_are_refused_without_a_crash(site, caplog, listed):
    from flwr.app import Context, RecordDict

    kit, config, _ = site
    message, _ = train_message(_schema(kit), STUDIES[0])
    message.content[keys.PLAN][keys.LEDGER_HEADS] = listed
    context = Context(run_id=1, node_id=1, node_config=dict(config), state=RecordDict(),
                      run_config={})
    log = _refused(lambda: build_client_app()(message, context), caplog,
                   "ledger heads|SITE=HEAD")
    assert "Traceback" not in log
    assert not _ledger(site).exists()


def test_start_refuses_a_node_whose_state_folder_was_replaced(site):
    _three_studies(site)
    _delete(site)
    records = site[1]["data-path"]
    result = run_cli("fedsynth-node", "start", "--kit", site[0].directory, "--data", records,
                     "--schema", site[0].directory / "schema.yaml")
    assert result.returncode == 2
    assert "no longer holds the entry" in result.stderr and "Traceback" not in result.stderr


def test_the_coordinator_keeps_the_heads_its_manifests_record(site, tmp_path, demo_registry,
                                                              demo_schema):
    reply = _train(site, STUDIES[0])
    head = str(reply.content[keys.SITE][keys.LEDGER_HEAD])
    key = load_signing_key(site[2] / "coordinator" / "manifest-signing.key")
    release = release_cohort(demo_registry.sites["hospital-01"].head(30), tmp_path / "out",
                             schema=demo_schema, plan=STUDIES[0],
                             sites={"siteA": SitePrivacySpent(1.0, 2, False, head)},
                             contributions={"siteA": [1]}, engine="deployment",
                             signing_key=key)
    assert release.manifest["ledger_heads"] == {"siteA": head}
    known = tmp_path / "ledger-heads.json"
    record_heads(known, release.manifest["ledger_heads"])
    record_heads(known, {"siteB": "c" * 64, "bad=name": "d" * 64})
    assert read_known_heads(known) == {"siteA": head, "siteB": "c" * 64}
    assert presented(read_known_heads(known)) == {
        keys.LEDGER_HEADS: [f"siteA={head}", f"siteB={'c' * 64}"]}


# ---------------------------------------------------------------- verify --kit

def _released_with(site, tmp_path, demo_registry, demo_schema, **claims):
    """Two rounds answered by the real node, and a cohort released and signed by the
    coordinator kit's key with the claims it recorded (or `claims` instead)."""
    plan = issued(StudyPlan(epsilon=2.0, rounds=2, local_steps=2, hidden=8, latent=2))
    first = _train(site, plan)
    second = _train(site, plan, server_round=2)
    metrics = second.content[keys.METRICS]
    honest = dict(epsilon=float(metrics[keys.EPSILON_SPENT]),
                  steps=int(metrics[keys.STEPS_TOTAL]),
                  ledger_head=str(second.content[keys.SITE][keys.LEDGER_HEAD]))
    assert first.content[keys.SITE][keys.LEDGER_HEAD] != honest["ledger_head"]
    rounds = claims.pop("rounds", [1, 2])
    key = load_signing_key(site[2] / "coordinator" / "manifest-signing.key")
    folder = tmp_path / "cohort"
    release_cohort(demo_registry.sites["hospital-01"].head(30), folder, schema=demo_schema,
                   plan=plan, sites={"siteA": SitePrivacySpent(**{**honest, **claims})},
                   contributions={"siteA": rounds}, engine="deployment", signing_key=key,
                   run=StudyRun(run_id=7, app_sha256=release_sha256()))  # the kit's pin
    return folder


def test_verify_kit_agrees_with_an_honest_manifest(site, tmp_path, demo_registry, demo_schema):
    folder = _released_with(site, tmp_path, demo_registry, demo_schema)
    result = run_cli("fedsynth-node", "verify", folder, "--kit", site[0].directory)
    assert result.returncode == 0, result.stderr
    assert "Site siteA: the manifest's rounds [1, 2], epsilon" in result.stdout


@pytest.mark.parametrize("claims, detail", [
    ({"epsilon": 0.5}, "states epsilon spent 0.5 for this site; its ledger records"),
    ({"steps": 2}, "states steps 2"),
    ({"rounds": [1, 2, 3]}, "round 3, which its ledger does not record"),
    ({"ledger_head": "9" * 64}, "no longer holds the entry 9999"),
])
def test_verify_kit_names_each_claim_the_ledger_contradicts(site, tmp_path, demo_registry,
                                                            demo_schema, claims, detail):
    folder = _released_with(site, tmp_path, demo_registry, demo_schema, **claims)
    result = run_cli("fedsynth-node", "verify", folder, "--kit", site[0].directory)
    assert result.returncode == 1
    assert detail in result.stderr and "Traceback" not in result.stderr


def test_verify_kit_refuses_a_manifest_crediting_a_study_the_site_never_joined(
        site, tmp_path, demo_registry, demo_schema):
    folder = _released_with(site, tmp_path, demo_registry, demo_schema)
    _delete(site)
    result = run_cli("fedsynth-node", "verify", folder, "--kit", site[0].directory)
    assert result.returncode == 1
    assert "holds no reserve of that study" in result.stderr


def test_entry_lines_stay_the_contract(site):
    """The head is the `hash` field of the ledger's last line, as `entry_line` writes it."""
    _train(site, STUDIES[0])
    entries = PrivacyLedger(site[0].state_dir).entries()
    assert _ledger(site).read_text().splitlines()[-1] == entry_line(entries[-1])


def test_a_privacy_report_is_not_read_from_a_rolled_back_ledger(site, caplog):
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    _three_studies(site)
    _truncate(site)  # the first study's lines are still there, the head is not
    kit, config, _ = site
    plan = ConfigRecord({**STUDIES[0].to_config(), keys.SCHEMA_SHA256: _schema(kit).sha256})
    query = Message(content=RecordDict({keys.PLAN: plan}), dst_node_id=1, message_type="query")
    context = Context(run_id=1, node_id=1, node_config=dict(config), state=RecordDict(),
                      run_config={})
    _refused(lambda: build_client_app()(query, context), caplog,
             r"no longer holds the entry .* this node's head file")
