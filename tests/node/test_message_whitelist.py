"""Everything a node sends during a study is a charged DP release or a function of the plan.

Small studies run in Flower's real simulation engine through
`simulation.engine.simulate_study`, each over two demo hospitals' CSV
files in tmp_path: a VAE study with FedAvg and federated evaluation; a
marginals study; a VAE study under SecAgg+ with the privacy reports that follow
it. The nodes run the real `node.client_app` handlers inside a ClientApp whose
Flower mod (`message_recorder`) writes down every reply: each record's type and
keys, each array's name, shape, dtype and values, each scalar's key, type and
value. The tests check each reply against the contract (`protocols.messages`,
`protocols.plan`) and against the site's own records: only the global model's
arrays (DP-SGD weights, noisy tables) and the whitelisted scalars leave; no
record count, no cell of a record, no column statistic.

Every study also holds two neighbours of hospital-01 as hospitals of their own:
its records with one patient more (n + 1), and with one patient's record
changed. All three receive the same global model every round, so their replies
must be identical in every value that is not noise (each scalar, each record's
type and keys, each array's name, shape and dtype; the manifest's privacy
statement for each), and differ in every noisy value, at the scale the plan
accounts for (checked for every site against its exact counts).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from coordinator.checkpoints import load_checkpoint
from protocols import messages as keys
from protocols.count_tables import build_layout
from protocols.evaluation.release import cell_sigmas, evaluation_layout
from protocols.generators import family_for
from protocols.generators.marginals.tables import (noise_scales, site_noise_multiplier,
                                                   table_counts)
from protocols.plan import StudyPlan
from protocols.privacy import secure_aggregation as contract
from protocols.privacy.ledger import is_head
from protocols.release.manifest import CSV_NAME
from protocols.schema import Schema, load_schema
from simulation import engine as simulation

# Helpers beside this file (tests/node/ is on sys.path, as pytest puts it for rootless tests).
from message_recorder import (LOG_ENV, build_recording_client_app, read_log, record_values,
                              typed_scalars, value_kinds)
from site_secrets import SiteTruth, normal_text, site_truth, statistic_in

pytestmark = pytest.mark.integration

# hospital-01 (40 records), its neighbours (41 records; 40 with one changed), hospital-02 (63)
SITES = ("hospital-01", "hospital-01-added", "hospital-01-changed", "hospital-02")
NEIGHBOURS = ("hospital-01-added", "hospital-01-changed")
DONOR = "hospital-03"  # where the added or changed patient comes from
SMALL_VAE = StudyPlan(epsilon=2.0, rounds=2, local_steps=2, sample_rate=0.3, hidden=8,
                      latent=2, rows=50, seed=3)
PLANS = {
    "vae": SMALL_VAE.with_overrides(evaluation_epsilon=0.5),
    "marginals": StudyPlan(epsilon=2.0, rounds=2, generator="marginals", rows=50, seed=3),
    "secure": SMALL_VAE.with_overrides(secure_aggregation=True),
}
METRIC_TYPES = {keys.WEIGHT: "float", keys.STEPS: "int", keys.STEPS_TOTAL: "int",
                keys.EPSILON_SPENT: "float", keys.SYNTHETIC_INPUT: "float"}
SECURE_STAGES = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK)
# What each SecAgg+ stage of Flower's secaggplus_mod sends (flwr/client/mod/secure_aggregation/
# secaggplus_mod.py): key -> type of the value (of each element, for a list).
SECURE_KEYS = {
    Stage.SETUP: {Key.PUBLIC_KEY_1: "bytes", Key.PUBLIC_KEY_2: "bytes"},
    Stage.SHARE_KEYS: {Key.DESTINATION_LIST: "int", Key.CIPHERTEXT_LIST: "bytes"},
    Stage.COLLECT_MASKED_VECTORS: {Key.MASKED_PARAMETERS: "bytes"},
    Stage.UNMASK: {Key.NODE_ID_LIST: "int", Key.SHARE_LIST: "bytes"},
}


# ---------------------------------------------------------------- the sites

@pytest.fixture(scope="module")
def site_files(tmp_path_factory, demo_registry) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("sites")
    schema_path = folder / "schema.yaml"
    schema_path.write_text(demo_registry.schema_yaml)
    paths = []
    for name in SITES:
        paths.append(folder / f"{name}.csv")
        _frame(demo_registry, name).to_csv(paths[-1], index=False)
    return schema_path, paths


def _frame(demo_registry, name: str) -> pd.DataFrame:
    """A site's records; the neighbours are hospital-01 with one patient more, and with
    its first patient's record replaced by another patient's."""
    if name not in NEIGHBOURS:
        return demo_registry.sites[name]
    own, other = demo_registry.sites[SITES[0]], demo_registry.sites[DONOR]
    if name.endswith("added"):
        return pd.concat([own, other.iloc[:1]], ignore_index=True)
    changed = own.copy()
    changed.iloc[0] = other.iloc[0]
    return changed


@pytest.fixture(scope="module")
def schema(site_files) -> Schema:
    return load_schema(site_files[0])


@pytest.fixture(scope="module")
def truths(site_files, schema) -> dict[str, SiteTruth]:
    return {path.stem: site_truth(path, schema) for path in site_files[1]}


# ---------------------------------------------------------------- the studies, recorded

@dataclass(frozen=True)
class RecordedStudy:
    plan: StudyPlan
    out: Path
    messages: list[dict[str, Any]]  # in the order the nodes received them

    def of(self, message_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["message_type"] == message_type]


def _run(name: str, site_files, tmp_path_factory) -> RecordedStudy:
    """One study in the simulation engine, with the node's ClientApp wrapped by the recorder."""
    schema_path, paths = site_files
    log_dir, out = tmp_path_factory.mktemp(f"{name}-log"), tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOG_ENV, str(log_dir))
        simulation.simulate_study(schema_path, paths, PLANS[name], out, lambda line: None,
                                  client_app=build_recording_client_app)
    messages = read_log(log_dir)
    for message in messages:
        message["site"] = SITES[int(message["partition"])]
    return RecordedStudy(PLANS[name], out, messages)


@pytest.fixture(scope="module")
def vae_study(site_files, tmp_path_factory) -> RecordedStudy:
    return _run("vae", site_files, tmp_path_factory)


@pytest.fixture(scope="module")
def marginals_study(site_files, tmp_path_factory) -> RecordedStudy:
    return _run("marginals", site_files, tmp_path_factory)


@pytest.fixture(scope="module")
def secure_study(site_files, tmp_path_factory) -> RecordedStudy:
    return _run("secure", site_files, tmp_path_factory)


ALL_STUDIES = ("vae_study", "marginals_study", "secure_study")
# What a round releases: the VAE's local DP-SGD steps, or one stage of the marginal tables.
STEPS_PER_ROUND = {"vae_study": PLANS["vae"].local_steps, "marginals_study": 1}
PLAIN_STUDIES = ("vae_study", "marginals_study")


def _expected_arrays(schema: Schema, plan: StudyPlan) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of the global model, from the contract, not from a message."""
    return {name: (tuple(value.shape), str(value.dtype))
            for name, value in family_for(plan).global_arrays(schema, plan).items()}


def _secure_stage(message: dict[str, Any]) -> str:
    return record_values(message, RECORD_KEY_CONFIGS, side="received")[Key.STAGE]


# ---------------------------------------------------------------- the recorder works

@pytest.mark.parametrize("study", ALL_STUDIES)
def test_the_recorder_saw_every_message_each_node_answered(study, request):
    recorded: RecordedStudy = request.getfixturevalue(study)
    plan = recorded.plan
    expected = {"train": plan.rounds * (4 if plan.secure_aggregation else 1)}
    if plan.evaluated:
        expected["evaluate"] = 1
    if plan.secure_aggregation:
        expected["query"] = 1  # the privacy report, which SecAgg+ makes necessary
    for site in SITES:
        seen = [m["message_type"] for m in recorded.messages if m["site"] == site]
        assert {t: seen.count(t) for t in set(seen)} == expected, site
    assert len(recorded.messages) == len(SITES) * sum(expected.values())
    for message in recorded.messages:
        assert "raised" not in message and message["error"] is None, message
    print(f"{study}: {len(recorded.messages)} messages recorded "
          f"({', '.join(f'{n} {t}' for t, n in expected.items())} per site)")


def test_the_marginals_study_releases_in_two_stages_and_says_which_mechanism_it_used(
        marginals_study, site_files, capsys):
    """(Its release, checked here so that the suite runs this study once.)"""
    from node.cli import main as node_main

    manifest = json.loads((marginals_study.out / "manifest.json").read_text())
    assert manifest["generator"] == "marginals" and manifest["rounds"] == 2
    assert "discrete Gaussian mechanism" in manifest["privacy"]["guarantee"]
    assert "adding or removing one patient's record" in manifest["privacy"]["statement"]
    for site in manifest["privacy"]["sites"].values():
        assert 1.9 < site["epsilon_spent"] <= 2.0 and site["steps"] == 2
    assert node_main(["check", "--schema", str(site_files[0]), "--data",
                      str(marginals_study.out / "synthetic.csv")]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out


# ---------------------------------------------------------------- training replies in the clear

@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_training_replies_hold_the_global_models_arrays_and_the_whitelisted_scalars_only(
        study, request, schema):
    recorded: RecordedStudy = request.getfixturevalue(study)
    expected = _expected_arrays(schema, recorded.plan)
    for message in recorded.of("train"):
        sent = message["sent"]
        assert set(sent) == {keys.ARRAYS, keys.METRICS, keys.SITE}
        assert [r["type"] for r in (sent[keys.ARRAYS], sent[keys.METRICS], sent[keys.SITE])] \
            == ["ArrayRecord", "MetricRecord", "ConfigRecord"]
        layout = {k: (tuple(a["shape"]), a["dtype"])
                  for k, a in sent[keys.ARRAYS]["arrays"].items()}
        assert layout == expected
        received = message["received"][keys.ARRAYS]["arrays"]
        assert {k: (tuple(a["shape"]), a["dtype"]) for k, a in received.items()} == expected
        assert set(message["arrays"]) == {f"{keys.ARRAYS}/{k}" for k in expected}
        assert all(np.isfinite(a).all() for a in message["arrays"].values())
        metrics = sent[keys.METRICS]["values"]
        assert set(metrics) == keys.REPLY_METRICS
        for key, (kind, value) in metrics.items():
            assert kind == METRIC_TYPES.get(key, kind) and kind in ("int", "float"), key
            assert math.isfinite(value), key
        _assert_site_and_head(message)


@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_the_whitelisted_scalars_say_only_what_the_plan_and_the_ledger_know(study, request):
    recorded: RecordedStudy = request.getfixturevalue(study)
    plan = recorded.plan
    for site in SITES:
        replies = [record_values(m, keys.METRICS) for m in recorded.of("train")
                   if m["site"] == site]
        assert len(replies) == plan.rounds
        steps = STEPS_PER_ROUND[study]
        assert [r[keys.STEPS] for r in replies] == [steps] * plan.rounds
        assert [r[keys.STEPS_TOTAL] for r in replies] == [steps * (i + 1)
                                                          for i in range(plan.rounds)]
        spent = [r[keys.EPSILON_SPENT] for r in replies]
        assert 0 < spent[0] < spent[-1] <= plan.epsilon


def test_every_site_weighs_one(vae_study, marginals_study, secure_study):
    for message in [*vae_study.of("train"), *marginals_study.of("train")]:
        assert record_values(message, keys.METRICS)[keys.WEIGHT] == 1.0
    collected = [m for m in secure_study.of("train")
                 if _secure_stage(m) == Stage.COLLECT_MASKED_VECTORS]
    assert collected
    for message in collected:
        assert record_values(message, "fitres.num_examples") == {"num_examples": 1}


# ---------------------------------------------------------------- after training

def test_evaluation_replies_hold_noisy_tables_of_the_evaluation_layout_only(
        vae_study, truths, schema):
    """Each site releases, once, its evaluation tables: whole numbers, the exact counts
    plus noise of the plan's scale; nothing else (no score, no figure, no count)."""
    layout = evaluation_layout(schema)
    shapes = {name: (tuple(shape), "float64") for name, shape in layout.table_shapes().items()}
    sigmas = cell_sigmas(layout, vae_study.plan)
    cohort = _cohort(vae_study.out, schema)
    replies = vae_study.of("evaluate")
    assert sorted(m["site"] for m in replies) == sorted(SITES)
    for message in replies:
        sent = message["sent"]
        assert set(sent) == {keys.EVALUATION_TABLES, keys.SITE}
        assert sent[keys.EVALUATION_TABLES]["type"] == "ArrayRecord"
        assert {k: (tuple(a["shape"]), a["dtype"])
                for k, a in sent[keys.EVALUATION_TABLES]["arrays"].items()} == shapes
        assert record_values(message, keys.SITE) == {keys.SITE_NAME: message["site"]}
        tables = {k.split("/", 1)[1]: a for k, a in message["arrays"].items()}
        assert all(np.array_equal(t, np.rint(t)) for t in tables.values())
        exact = layout.counts(truths[message["site"]].site.parsed, cohort)
        for base in sorted(set(sigmas.values())):
            names = [n for n, sigma in sigmas.items() if sigma == base]
            _assert_noise({n: tables[n] for n in names}, {n: exact[n] for n in names}, base)


def _cohort(out: Path, schema: Schema) -> pd.DataFrame:
    from protocols.records import check_file
    return check_file(out / CSV_NAME, schema).parsed


def test_privacy_reports_hold_the_whitelisted_metrics_only(secure_study):
    plan = secure_study.plan
    replies = secure_study.of("query")
    assert sorted(m["site"] for m in replies) == sorted(SITES)
    for message in replies:
        assert set(message["sent"]) == {keys.REPORT, keys.SITE} and not message["arrays"]
        assert message["sent"][keys.REPORT]["type"] == "MetricRecord"
        report = record_values(message, keys.REPORT)
        assert set(report) == keys.REPORT_METRICS
        assert 0 < report[keys.EPSILON_SPENT] <= plan.epsilon
        assert report[keys.STEPS_TOTAL] == plan.total_steps
        assert report[keys.ROUNDS] == list(range(1, plan.rounds + 1))
        _assert_site_and_head(message)


def _assert_site_and_head(message: dict[str, Any]) -> None:
    """A training reply's or privacy report's site record: the site's name and its
    ledger's head (64 hex digits, the hash of its ledger's last line), nothing else."""
    site = record_values(message, keys.SITE)
    assert set(site) == keys.REPLY_SITE and site[keys.SITE_NAME] == message["site"]
    assert is_head(site[keys.LEDGER_HEAD])


# ---------------------------------------------------------------- SecAgg+

def test_secure_aggregation_sends_only_protocol_keys_and_masked_vectors(secure_study, schema):
    plan, model = secure_study.plan, _expected_arrays(schema, secure_study.plan)
    node_ids = {m["node_id"] for m in secure_study.messages}
    for site in SITES:
        stages = [_secure_stage(m) for m in secure_study.of("train") if m["site"] == site]
        assert stages == list(SECURE_STAGES) * plan.rounds
    for message in secure_study.of("train"):
        stage, sent = _secure_stage(message), message["sent"]
        assert not message["arrays"]  # no array record with any content
        configs = record_values(message, RECORD_KEY_CONFIGS)
        assert set(configs) == set(SECURE_KEYS[stage])
        assert {k: value_kinds(v) for k, v in sent[RECORD_KEY_CONFIGS]["values"].items()} \
            == {k: {kind} for k, kind in SECURE_KEYS[stage].items()}
        if stage != Stage.COLLECT_MASKED_VECTORS:
            assert set(sent) == {RECORD_KEY_CONFIGS}
        for key in (Key.DESTINATION_LIST, Key.NODE_ID_LIST):
            assert set(configs.get(key, [])) <= node_ids
        if stage == Stage.SETUP:
            assert all(configs[k].startswith(b"-----BEGIN PUBLIC KEY-----")
                       for k in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2))
        if stage == Stage.COLLECT_MASKED_VECTORS:
            _assert_masked(message, configs[Key.MASKED_PARAMETERS], model)


def _assert_masked(message: dict[str, Any], masked: list[bytes], model: dict) -> None:
    """The masked-vector stage: Flower's legacy FitRes (no array, no metric, the FedAvg
    weight) and the masked vectors, which look nothing like a plaintext update."""
    sent = message["sent"]
    assert set(sent) == {RECORD_KEY_CONFIGS, "fitres.metrics", "fitres.num_examples",
                         "fitres.parameters", "fitres.status"}
    assert sent["fitres.parameters"] == {"type": "ArrayRecord", "arrays": {}}
    assert sent["fitres.metrics"] == {"type": "ConfigRecord", "values": {}}
    assert record_values(message, "fitres.status") == {"code": 0, "message": ""}
    vectors = [bytes_to_ndarray(b) for b in masked]
    # The weight factor first, then one vector per layer of the global model.
    assert [v.shape for v in vectors] == [(1,)] + [shape for shape, _ in model.values()]
    assert all(np.issubdtype(v.dtype, np.integer) for v in vectors)
    values = np.concatenate([v.ravel() for v in vectors]).astype(np.int64)
    assert values.min() >= 0 and values.max() < contract.MODULUS_RANGE
    # A quantised plaintext lies in [0, T]; masked values are uniform modulo M = 64 T.
    above = float(np.mean(values > contract.QUANTIZATION_RANGE))
    assert above > 0.9, f"only {above:.0%} of the masked values lie beyond the quantised range"


# ---------------------------------------------------------------- nothing of the records

@pytest.mark.parametrize("study", ALL_STUDIES)
def test_no_message_holds_the_sites_exact_record_count(study, request, truths):
    recorded: RecordedStudy = request.getfixturevalue(study)
    checked = 0
    for message in recorded.messages:
        n = truths[message["site"]].n
        numbers = [(key, value) for key, kind, value in typed_scalars(message)
                   if kind in ("int", "float")]
        checked += len(numbers)
        assert [key for key, value in numbers if value == n] == []
    assert checked >= len(recorded.messages)  # SecAgg+ key exchanges hold no number


@pytest.mark.parametrize("study", ALL_STUDIES)
def test_no_text_a_node_sends_is_a_cell_of_its_records(study, request, truths):
    recorded: RecordedStudy = request.getfixturevalue(study)
    for message in recorded.messages:
        truth = truths[message["site"]]
        texts = [value for _, kind, value in typed_scalars(message) if kind == "str"]
        blobs = [value.decode("latin-1") for _, kind, value in typed_scalars(message)
                 if kind == "bytes"]
        assert [t for t in texts if normal_text(t) in truth.cells] == []
        assert [d for d in truth.distinctive if any(d in t for t in [*texts, *blobs])] == []


@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_no_array_holds_a_column_statistic_of_the_site(study, request, truths):
    """No array, nor any run of values along any of its axes, equals a statistic of
    the site's columns (to 1e-6): DP-SGD weights and noisy tables only."""
    recorded: RecordedStudy = request.getfixturevalue(study)
    for message in recorded.of("train"):
        statistics = truths[message["site"]].statistics
        for name, array in message["arrays"].items():
            assert statistic_in(array, statistics) is None, f"{message['site']} sent {name}"


def test_the_statistic_check_finds_a_statistic_hidden_in_an_array(truths):
    statistics = truths[SITES[0]].statistics
    rng = np.random.default_rng(0)
    for stat, vector in list(statistics.items())[::5]:
        weights = rng.normal(size=(3, len(vector) + 4)).astype(np.float32)
        weights[1, 2:2 + len(vector)] = vector
        assert statistic_in(weights, statistics) is not None, stat
        assert statistic_in(weights.T.copy(), statistics) is not None, stat
    assert statistic_in(rng.normal(size=(8, 130)), statistics) is None


def test_marginal_tables_are_the_exact_counts_plus_noise_of_the_plans_scale(
        marginals_study, truths, schema):
    """Round 1: noisy column tables, pair tables all zero. Round 2: the column tables
    the node received (the sites' average, echoed), and noisy pair tables on the coarse
    bins cut from that average. The noise is the plan's: the residual's spread is σ."""
    plan, layout = marginals_study.plan, build_layout(schema)
    noise = site_noise_multiplier(plan, *table_counts(layout))
    sigma_one, sigma_two = noise_scales(layout, noise)
    average = {k: a.numpy() for k, a in load_checkpoint(marginals_study.out, 1).arrays.items()}
    staged = layout.with_groups({k: v for k, v in average.items() if k.startswith("1|")})
    for site in SITES:
        first, second = [{k.split("/", 1)[1]: a for k, a in m["arrays"].items()}
                         for m in marginals_study.of("train") if m["site"] == site]
        parsed = truths[site].site.parsed
        exact_one = layout.column_counts(parsed)
        _assert_noise(first, exact_one, sigma_one)
        assert all(not t.any() for k, t in first.items() if k.startswith("2|"))
        assert all(np.array_equal(second[k], average[k]) for k in exact_one)
        assert not any(np.array_equal(second[k], first[k]) for k in exact_one)
        _assert_noise(second, staged.pair_counts(parsed), sigma_two)


def _assert_noise(sent: dict[str, np.ndarray], exact: dict[str, np.ndarray],
                  sigma: float) -> None:
    residual = np.concatenate([(sent[k] - t).ravel() for k, t in exact.items()])
    assert np.array_equal(residual, np.rint(residual))  # whole counts, integer noise
    assert np.mean(residual == 0) < 0.5
    spread = float(residual.std())
    assert 0.7 * sigma < spread < 1.3 * sigma, (spread, sigma)
    assert abs(float(residual.mean())) < 4 * sigma / math.sqrt(residual.size)


# ---------------------------------------------------------------- neighbouring data

def _public_view(message: dict[str, Any]) -> dict[str, Any]:
    """Everything a reply holds except the values of its arrays and the site's own name:
    record types and keys, every scalar with its type and value, each array's name, shape
    and dtype."""
    sent = json.loads(json.dumps(message["sent"]))
    if keys.SITE in sent:
        sent[keys.SITE]["values"].pop(keys.SITE_NAME)
        # The ledger head hashes the plan's values and the time each was charged (no
        # record; tests/node/test_privacy_attacks.py checks it is the ledger's last
        # line): the time differs by site, so it is left out like the name.
        sent[keys.SITE]["values"].pop(keys.LEDGER_HEAD, None)
    return {"type": message["message_type"], "error": message["error"], "sent": sent}


@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_neighbouring_data_changes_nothing_but_the_accounted_noise(study, request):
    """n, n + 1 and one record changed, answering the same global models: every message
    is the same except the values of the noised arrays, and those all differ."""
    recorded: RecordedStudy = request.getfixturevalue(study)
    replies = {site: [m for m in recorded.messages if m["site"] == site]
               for site in (SITES[0], *NEIGHBOURS)}
    views = {site: [_public_view(m) for m in messages] for site, messages in replies.items()}
    for site in NEIGHBOURS:
        assert views[site] == views[SITES[0]], site
    for position, message in enumerate(replies[SITES[0]]):
        for name, array in message["arrays"].items():
            if not array.any():
                continue  # the pair tables of stage 1: zeros, public, not noise
            for site in NEIGHBOURS:
                echoed = message["message_type"] == "train" and name.startswith(
                    f"{keys.ARRAYS}/1|") and position == 1 and recorded.plan.generator == \
                    "marginals"
                other = replies[site][position]["arrays"][name]
                # Stage 2 echoes the global column tables, the same for every site.
                assert np.array_equal(other, array) == echoed, (site, name)


@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_neighbouring_data_gives_the_same_privacy_statement_per_site(study, request):
    recorded: RecordedStudy = request.getfixturevalue(study)
    manifest = json.loads((recorded.out / "manifest.json").read_text())
    sites = manifest["privacy"]["sites"]
    for site in NEIGHBOURS:
        assert sites[site] == sites[SITES[0]]
        assert manifest["contributions"][site] == manifest["contributions"][SITES[0]]
