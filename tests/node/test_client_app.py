"""The node's ClientApp, called the way Flower calls it, on real files."""

import json
import logging
import math
import re
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from node.client_app import SiteRefusal, build_client_app
from node.site_config import resolve_site
from protocols import messages as keys
from protocols.encoding import build_encoding
from protocols.errors import BudgetError, FedsynthError
from protocols.generators.vae.model import build_generator
from protocols.plan import StudyPlan

# Helpers beside this file (tests/node/ is on sys.path, as pytest puts it for rootless tests).
from client_calls import issued, node_context, train_message

@pytest.fixture(autouse=True)
def task_identity():
    """Flower stamps messages with the running task's identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


PLAN = StudyPlan(epsilon=2.0, rounds=2, local_steps=3, sample_rate=0.2, hidden=16, latent=4)


def _message(schema, plan=PLAN, schema_hash=None, server_round=1, arrays=None):
    return train_message(schema, plan, schema_hash, server_round, arrays)


_context = node_context


def test_reply_holds_only_weights_of_the_global_shapes_and_whitelisted_scalars(
        site_files, demo_schema):
    msg, model = _message(demo_schema)
    reply = build_client_app()(msg, _context(*site_files))
    assert not reply.has_error()
    assert set(reply.content.keys()) == {keys.ARRAYS, keys.METRICS, keys.SITE}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(a.numpy().shape) for k, a in reply.content[keys.ARRAYS].items()} == shapes
    metrics = reply.content[keys.METRICS]
    assert set(metrics.keys()) == keys.REPLY_METRICS
    assert metrics[keys.WEIGHT] == 1.0  # no row count leaves the node
    assert metrics[keys.SYNTHETIC_INPUT] == 0.0  # real records
    assert 0 < metrics[keys.EPSILON_SPENT] <= PLAN.epsilon
    # The head is the hash of the ledger's last line: it says nothing the ledger does not.
    head = json.loads(_ledger_lines(site_files)[-1])["hash"]
    assert dict(reply.content[keys.SITE]) == {keys.SITE_NAME: "hospital-03",
                                              keys.LEDGER_HEAD: head}


def test_node_keeps_counting_steps_across_rounds(site_files, demo_schema, caplog):
    app, context = build_client_app(), _context(*site_files)
    first = app(_message(demo_schema)[0], context).content[keys.METRICS]
    second = app(_message(demo_schema, server_round=2)[0], context).content[keys.METRICS]
    assert second[keys.STEPS_TOTAL] == 2 * first[keys.STEPS_TOTAL] == PLAN.total_steps
    assert first[keys.EPSILON_SPENT] < second[keys.EPSILON_SPENT] <= PLAN.epsilon
    _refused(lambda: app(_message(demo_schema, server_round=3)[0], context), caplog,
             "exceed")


def test_node_refuses_a_plan_for_another_schema(site_files, demo_schema, caplog):
    msg, _ = _message(demo_schema, schema_hash="0" * 64)
    _refused(lambda: build_client_app()(msg, _context(*site_files)), caplog,
             "the plan is for schema 0000")
    assert not _ledger_path(site_files).exists()  # public inputs: checked before the ledger


def test_records_that_break_the_schema_are_read_only_after_the_ledger_reserved(
        site_files, demo_schema, caplog):
    """A check that reads the records cannot be probed for free: it runs after the study's
    reserve, so every such refusal costs the plan's epsilon."""
    schema_path, data_path = site_files
    text = data_path.read_text().splitlines()
    fields = text[1].split(",")
    fields[1] = "130"  # age_at_diagnosis above the declared max of 90
    data_path.write_text("\n".join([text[0], ",".join(fields), *text[2:]]) + "\n")
    sent = _refused(lambda: build_client_app()(_message(demo_schema)[0],
                                               _context(schema_path, data_path)),
                    caplog, r"row 1, column 'age_at_diagnosis', value '130'")
    assert "130" not in sent  # no value leaves the node
    assert [json.loads(line)["kind"] for line in _ledger_lines(site_files)] == ["reserve"]


def test_non_private_plan_reports_infinite_epsilon(site_files, demo_schema, caplog):
    plan = StudyPlan(epsilon=math.inf, rounds=1, local_steps=2, hidden=16, latent=4)
    _refused(lambda: build_client_app()(_message(demo_schema, plan)[0],
                                        _context(*site_files)), caplog,
             "max-epsilon-per-study")  # beyond the default cap on one study
    _refused(lambda: build_client_app()(_message(demo_schema, plan)[0],
                                        _context(*site_files, **{"max-epsilon-per-study": "inf"})),
             caplog, "needs epsilon inf")  # never within a finite budget
    unlimited = _context(*site_files, **{"epsilon-budget": "inf",
                                         "max-epsilon-per-study": "inf"})
    reply = build_client_app()(_message(demo_schema, plan)[0], unlimited)
    assert math.isinf(reply.content[keys.METRICS][keys.EPSILON_SPENT])


def test_sites_of_any_size_send_the_same_scalars(tmp_path, demo_registry, demo_schema):
    """n and n + 1 records: weight, steps and epsilon are functions of the plan alone."""
    schema_path = tmp_path / "schema.yaml"
    schema_path.write_text(demo_registry.schema_yaml)
    frame = demo_registry.sites["hospital-03"]
    replies = []
    for n in (60, 61, 100):
        folder = tmp_path / f"site-{n}"
        folder.mkdir()
        frame.iloc[:n].to_csv(folder / "hospital-03.csv", index=False)
        reply = build_client_app()(_message(demo_schema)[0],
                                   _context(schema_path, folder / "hospital-03.csv"))
        replies.append(dict(reply.content[keys.METRICS]))
    assert replies[0] == replies[1] == replies[2]
    assert replies[0][keys.WEIGHT] == 1.0


MARGINALS = StudyPlan(epsilon=2.0, rounds=2, generator="marginals")


def test_a_marginals_release_holds_only_the_tables_and_comes_in_two_stages(site_files,
                                                                          demo_schema, caplog):
    from coordinator.server_app import initial_arrays

    initial = initial_arrays(demo_schema, MARGINALS)
    config = ConfigRecord({**issued(MARGINALS).to_config(), keys.SCHEMA_SHA256: demo_schema.sha256,
                           keys.SERVER_ROUND: 1})

    def message(arrays):
        return Message(content=RecordDict({keys.ARRAYS: arrays, keys.PLAN: config}),
                       dst_node_id=1, message_type="train")

    app, context = build_client_app(), _context(*site_files)
    first = app(message(initial), context)
    assert set(first.content.keys()) == {keys.ARRAYS, keys.METRICS, keys.SITE}
    tables = {k: a.numpy() for k, a in first.content[keys.ARRAYS].items()}
    assert {k: t.shape for k, t in tables.items()} == {
        k: a.numpy().shape for k, a in initial.items()}
    assert all(not t.any() for k, t in tables.items() if k.startswith("2|"))  # not yet
    metrics = first.content[keys.METRICS]
    assert set(metrics.keys()) == keys.REPLY_METRICS and metrics[keys.WEIGHT] == 1.0
    assert 0 < metrics[keys.EPSILON_SPENT] < 1.9
    config[keys.SERVER_ROUND] = 2
    second = app(message(first.content[keys.ARRAYS]), context)
    echoed = {k: a.numpy() for k, a in second.content[keys.ARRAYS].items()}
    assert all((echoed[k] == t).all() for k, t in tables.items() if k.startswith("1|"))
    assert any(t.any() for k, t in echoed.items() if k.startswith("2|"))
    assert 1.9 < second.content[keys.METRICS][keys.EPSILON_SPENT] <= 2.0
    config[keys.SERVER_ROUND] = 3
    _refused(lambda: app(message(second.content[keys.ARRAYS]), context), caplog,
             "already released")


def _refused(call, caplog, detail):
    """The site declines: the coordinator gets the one fixed text, whatever the reason;
    the node's log has the detail."""
    with caplog.at_level(logging.ERROR, logger="node.client_app"):
        with pytest.raises(SiteRefusal) as raised:
            call()
    assert re.search(detail, caplog.text), caplog.text
    assert str(raised.value) == keys.DECLINED
    return str(raised.value)


def _ledger_path(site_files):
    return Path(site_files[1]).parent / "node-state" / "privacy-ledger.jsonl"


def _ledger_lines(site_files):
    return _ledger_path(site_files).read_text().splitlines()


def test_a_resumed_round_with_the_same_model_gets_the_same_answer_and_no_second_charge(
        site_files, demo_schema):
    """A coordinator restarted from its checkpoint asks again for round 1 with the same
    global model: the node gives the answer it gave, and its ledger charges round 1 once."""
    msg, _ = _message(demo_schema)
    first = build_client_app()(msg, _context(*site_files))
    again = build_client_app()(_message(demo_schema)[0], _context(*site_files))  # a new run
    for name, array in first.content[keys.ARRAYS].items():
        assert (again.content[keys.ARRAYS][name].numpy() == array.numpy()).all()
    assert dict(again.content[keys.METRICS]) == dict(first.content[keys.METRICS])
    kinds = [json.loads(line)["kind"] for line in _ledger_lines(site_files)]
    assert kinds == ["reserve", "round"]


def test_two_studies_of_one_plan_are_both_charged_not_refused_as_charged_twice(
        site_files, demo_schema):
    """Two consortia, or one running an identical plan again against the same kits: each
    study's plan comes with the coordinator's own nonce, so the node charges each as the
    study it is, under its own id."""
    app, context = build_client_app(), _context(*site_files)
    studies = [PLAN.issued(), PLAN.issued()]
    for plan in studies:
        assert not app(_message(demo_schema, plan)[0], context).has_error()
    entries = [json.loads(line) for line in _ledger_lines(site_files)]
    ids = [plan.fingerprint(demo_schema.sha256) for plan in studies]
    assert ids[0] != ids[1]
    assert [(e["kind"], e["study"]) for e in entries] == [
        ("reserve", ids[0]), ("round", ids[0]), ("reserve", ids[1]), ("round", ids[1])]


@pytest.mark.parametrize("nonce, rule", [(None, "study-nonce is missing"),
                                         ("", "study-nonce is missing"),
                                         ("not-hex", "study-nonce must be 32 lowercase hex")])
def test_a_plan_without_a_well_formed_study_nonce_is_refused_before_the_ledger(
        site_files, demo_schema, caplog, nonce, rule):
    msg, _ = _message(demo_schema)
    config = msg.content[keys.PLAN]
    if nonce is None:
        del config["study-nonce"]
    else:
        config["study-nonce"] = nonce
    _refused(lambda: build_client_app()(msg, _context(*site_files)), caplog,
             f"Study plan is invalid: {rule}")
    assert not _ledger_path(site_files).exists()


def test_a_round_already_charged_is_refused_for_a_different_model(site_files, demo_schema, caplog):
    app, context = build_client_app(), _context(*site_files)
    first = app(_message(demo_schema)[0], context)
    _refused(lambda: app(_message(demo_schema, arrays=first.content[keys.ARRAYS])[0],
                         context), caplog, "spend the site's budget twice")


def test_a_study_that_would_overspend_the_site_budget_is_refused_before_any_step(
        site_files, demo_schema, caplog):
    context = _context(*site_files, **{"epsilon-budget": 3.0})
    build_client_app()(_message(demo_schema)[0], context)  # commits epsilon 2 of 3
    other = StudyPlan(epsilon=2.0, rounds=1, local_steps=2, hidden=16, latent=4)
    _refused(lambda: build_client_app()(_message(demo_schema, other)[0], context),
             caplog, "committed 2 of its epsilon budget of 3")
    assert len(_ledger_lines(site_files)) == 2  # nothing charged for the refused study


def test_a_study_that_would_overspend_the_delta_budget_is_refused(site_files, demo_schema,
                                                                   caplog):
    context = _context(*site_files, **{"delta-budget": 1.5e-5})
    build_client_app()(_message(demo_schema)[0], context)  # commits delta 1e-5
    other = StudyPlan(epsilon=1.0, rounds=1, local_steps=2, hidden=16, latent=4)
    _refused(lambda: build_client_app()(_message(demo_schema, other)[0], context),
             caplog, "needs delta 1e-05, but the site has already committed 1e-05")


def test_a_node_whose_ledger_chain_is_broken_refuses_to_train(site_files, demo_schema, caplog):
    app, context = build_client_app(), _context(*site_files)
    app(_message(demo_schema)[0], context)
    path = Path(site_files[1]).parent / "node-state" / "privacy-ledger.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0].replace('"epsilon": 2.0', '"epsilon": 0.5') + "\n" + lines[1] + "\n")
    _refused(lambda: app(_message(demo_schema, server_round=2)[0], context), caplog,
             "line 1: .* hash chain is broken")


@pytest.mark.parametrize("key", ["state-dir", "epsilon-budget", "delta-budget"])
def test_a_deployed_node_needs_a_ledger_folder_and_a_budget(site_files, demo_schema, caplog,
                                                            key):
    context = _context(*site_files)
    del context.node_config[key]
    _refused(lambda: build_client_app()(_message(demo_schema)[0], context), caplog, key)


def test_under_secure_aggregation_an_answer_is_never_given_twice(site_files, demo_schema,
                                                                 caplog):
    """A second secure sum over other sites would reveal this site's update by subtraction,
    so a round re-asked with the same model is refused rather than replayed, within one
    study; another study of the same plan (its own nonce) is a study of its own."""
    from node.client_app import train_reply

    secure = StudyPlan(epsilon=2.0, rounds=2, local_steps=3, hidden=16, latent=4,
                       secure_aggregation=True).issued()
    context = _context(*site_files)
    source = resolve_site(context.node_config, {})
    train_reply(_message(demo_schema, secure)[0].content, context, source)
    with pytest.raises(BudgetError, match="never given twice"):
        train_reply(_message(demo_schema, secure)[0].content, context, source)
    assert _round_entries_of(site_files) == [1]
    train_reply(_message(demo_schema, secure.issued())[0].content, context, source)
    assert _round_entries_of(site_files) == [1, 1]


def test_a_secure_plan_is_never_answered_in_the_clear(site_files, demo_schema, caplog):
    secure = StudyPlan(epsilon=2.0, rounds=2, local_steps=3, secure_aggregation=True)
    _refused(lambda: build_client_app()(_message(demo_schema, secure)[0],
                                        _context(*site_files)), caplog, "in the clear")


def test_an_unmasking_that_lists_a_site_as_both_surviving_and_dropped_is_refused():
    from flwr.common.secure_aggregation.secaggplus_constants import (RECORD_KEY_CONFIGS,
                                                                      Key, Stage)

    from node.secure_aggregation import secure_train

    configs = ConfigRecord({Key.STAGE: Stage.UNMASK, Key.ACTIVE_NODE_ID_LIST: [1, 2],
                            Key.DEAD_NODE_ID_LIST: [2]})
    msg = Message(content=RecordDict({RECORD_KEY_CONFIGS: configs}), dst_node_id=1,
                  message_type="train")
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(FedsynthError, match="both as surviving and as dropped"):
        secure_train(msg, context, lambda content: content)


def _round_entries_of(site_files):
    return [json.loads(line)["round"] for line in _ledger_lines(site_files)
            if json.loads(line)["kind"] == "round"]


@pytest.mark.parametrize("tamper, detail", [
    (lambda state: {k: v for k, v in list(state.items())[1:]}, "arrays are not those"),
    (lambda state: {**state, next(iter(state)): state[next(iter(state))][:1]}, "has shape"),
    (lambda state: {**state, next(iter(state)): state[next(iter(state))].double()}, "dtype"),
    (lambda state: {**state, next(iter(state)): state[next(iter(state))] * float("nan")},
     "NaN or Inf"),
])
def test_a_global_model_that_is_not_the_plans_is_refused_before_the_ledger(
        site_files, demo_schema, caplog, tamper, detail):
    _, model = _message(demo_schema)
    arrays = ArrayRecord(tamper(dict(model.state_dict())))
    _refused(lambda: build_client_app()(_message(demo_schema, arrays=arrays)[0],
                                        _context(*site_files)), caplog, detail)
    assert not (Path(site_files[1]).parent / "node-state" / "privacy-ledger.jsonl").exists()


def test_a_small_site_is_never_refused_by_its_size(site_files, demo_schema, caplog):
    """15 records, below the floor and below what the plan is meant for: the node still
    sends a reply as private as any other (a refusal would tell the coordinator the size),
    and only its operator's log says the update is mostly noise."""
    schema_path, data_path = site_files
    lines = data_path.read_text().splitlines()
    data_path.write_text("\n".join(lines[:16]) + "\n")  # 15 records
    with caplog.at_level(logging.WARNING, logger="node.client_app"):
        reply = build_client_app()(_message(demo_schema)[0], _context(schema_path, data_path))
    assert not reply.has_error()
    assert "has 15 records; this plan is meant for sites of at least" in caplog.text
    assert "15" not in json.dumps(dict(reply.content[keys.METRICS]))


def test_a_cohort_is_refused_as_records_unless_the_operator_allows_it_and_then_said(
        site_files, demo_schema, caplog):
    schema_path, data_path = site_files
    (data_path.parent / "manifest.json").write_text(
        json.dumps({"synthetic": True, "files": {data_path.name: {}}}))
    _refused(lambda: build_client_app()(_message(demo_schema)[0],
                                        _context(schema_path, data_path)),
             caplog, "SYNTHETIC fedsynth cohort .*--train-on-synthetic")
    assert not (data_path.parent / "node-state" / "privacy-ledger.jsonl").exists()
    allowed = _context(schema_path, data_path, **{"train-on-synthetic": "true"})
    reply = build_client_app()(_message(demo_schema)[0], allowed)
    assert reply.content[keys.METRICS][keys.SYNTHETIC_INPUT] == 1.0


def test_an_unexpected_failure_reaches_the_coordinator_without_its_text(site_files, caplog):
    """A bug's message (here a KeyError naming what is missing) stays in the node's log."""
    msg = Message(content=RecordDict({keys.ARRAYS: ArrayRecord()}), dst_node_id=1,
                  message_type="train")
    sent = _refused(lambda: build_client_app()(msg, _context(*site_files)), caplog,
                    r"fedsynth-node failed(.|\n)*Traceback(.|\n)*KeyError")
    assert sent == keys.DECLINED


def test_a_site_that_missed_the_first_marginals_stage_does_not_release_the_second(
        site_files, demo_schema, caplog):
    from coordinator.server_app import initial_arrays

    config = ConfigRecord({**issued(MARGINALS).to_config(), keys.SCHEMA_SHA256: demo_schema.sha256,
                           keys.SERVER_ROUND: 2})
    msg = Message(content=RecordDict({keys.ARRAYS: initial_arrays(demo_schema, MARGINALS),
                                      keys.PLAN: config}), dst_node_id=1, message_type="train")
    _refused(lambda: build_client_app()(msg, _context(*site_files)), caplog,
             "refuses to join the marginals study in round 2")
    assert not (Path(site_files[1]).parent / "node-state" / "privacy-ledger.jsonl").exists()


def test_a_reserved_study_whose_first_stage_never_left_does_not_release_it_late(
        site_files, demo_schema, caplog):
    """Round 1 reserves the study, then fails reading the records: the ledger holds a
    reserve and no round. Asked for round 2 (with the records fixed), the site must not
    send its first-stage tables now: under SecAgg+ they would sit among the others' echoed
    tables, and the coordinator could subtract those and see this site's share alone."""
    from coordinator.server_app import initial_arrays

    schema_path, data_path = site_files
    good = data_path.read_text()
    data_path.write_text(good.replace("\n", "\nnot,a,valid,row\n", 1))

    def message(server_round: int) -> Message:
        config = ConfigRecord({**issued(MARGINALS).to_config(), keys.SCHEMA_SHA256: demo_schema.sha256,
                               keys.SERVER_ROUND: server_round})
        return Message(content=RecordDict({keys.ARRAYS: initial_arrays(demo_schema, MARGINALS),
                                           keys.PLAN: config}), dst_node_id=1,
                       message_type="train")

    context = _context(schema_path, data_path)
    _refused(lambda: build_client_app()(message(1), context), caplog, "row")
    ledger = (data_path.parent / "node-state" / "privacy-ledger.jsonl").read_text()
    assert '"kind": "reserve"' in ledger and '"kind": "round"' not in ledger
    data_path.write_text(good)
    _refused(lambda: build_client_app()(message(2), context), caplog,
             "refuses to join the marginals study in round 2")
