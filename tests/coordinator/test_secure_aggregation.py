"""SecAgg+ study rounds in Flower's real simulation engine, with real DP training at the nodes.

The ServerApp and ClientApp are built here from `coordinator.secure_aggregation`
and `node.secure_aggregation`. Each node trains with `protocols.generators.vae.training.train_round`
(Opacus DP-SGD) and writes what it received and what it sent to tmp_path, so the
test can compare the coordinator's average with the nodes' own updates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
from flwr.server.compat.grid_client_proxy import GridClientProxy
import pytest
from flwr.app import (Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord,
                      RecordDict)
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from coordinator import secure_aggregation as secure_coordinator
from coordinator.server_app import initial_arrays
from node.secure_aggregation import is_secure_message, secure_train
from node.site_config import resolve_site
from protocols import messages as keys
from protocols.errors import FedsynthError
from protocols.generators.vae.family import VaeFamily
from protocols.generators.vae.model import build_generator
from protocols.plan import StudyPlan
from protocols.privacy import secure_aggregation as contract
from simulation.engine import loopback_backend_config, ray_environment

# The simulated nodes run in Ray workers: ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PLAN = StudyPlan(rounds=3, local_steps=3, rows=50, min_sites=3)
FIRST, LAST, SITES = 2, 3, 3


def dp_train_reply(content: RecordDict, context: Context, out: Path) -> RecordDict:
    """A minimal real `train_reply`: DP-SGD on the node's demo site, reply as the node does."""
    import torch

    from protocols.generators.vae.accounting import dpsgd_privacy
    from protocols.generators.vae.training import train_round

    torch.set_num_threads(1)
    config = dict(content[keys.PLAN])
    plan = StudyPlan.from_config(config)
    schema, site = resolve_site(context.node_config, {}).load()
    assert config[keys.SCHEMA_SHA256] == schema.sha256
    study_round = int(config[keys.SERVER_ROUND])
    model = build_generator(site.encoding, plan.hidden, plan.latent, plan.seed)
    model.load_state_dict(content[keys.ARRAYS].to_torch_state_dict())
    privacy = dpsgd_privacy(plan)
    outcome = train_round(model, site.encoded, plan, privacy, (study_round - 1) * plan.local_steps)
    sent = ArrayRecord(model.state_dict())
    np.savez(out / f"{site.name}-round{study_round}.npz",
             **{f"received/{k}": a.numpy() for k, a in content[keys.ARRAYS].items()},
             **{f"sent/{k}": a.numpy() for k, a in sent.items()})
    return RecordDict({
        keys.ARRAYS: sent,
        keys.METRICS: MetricRecord({keys.WEIGHT: 1.0, keys.STEPS: outcome.steps,
                                    keys.STEPS_TOTAL: outcome.steps_total,
                                    keys.EPSILON_SPENT: outcome.epsilon}),
        keys.SITE: ConfigRecord({keys.SITE_NAME: site.name}),
    })


def client_app(out: Path) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        assert is_secure_message(msg), "a plain train message reached a secure study"
        return secure_train(msg, context, lambda content: dp_train_reply(content, context, out))

    return app


def server_app(outcome: dict[str, Any]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        send_and_receive = grid.send_and_receive

        def recording(messages, *args, **kwargs):  # every reply the coordinator receives
            replies = list(send_and_receive(messages, *args, **kwargs))
            outcome["replies"].extend(replies)
            return replies

        grid.send_and_receive = recording  # type: ignore[method-assign]
        schema, _ = resolve_site({"partition-id": 0, "num-partitions": SITES}, {}).load()
        outcome["initial"] = initial_arrays(schema, PLAN)
        plan_record = ConfigRecord({**PLAN.to_config(), keys.SCHEMA_SHA256: schema.sha256})
        try:
            outcome["final"] = secure_coordinator.secure_rounds(
                grid, context, plan_record=plan_record, initial=outcome["initial"],
                first_round=FIRST, last_round=LAST, min_sites=SITES,
                after_round=lambda r, arrays, nodes: outcome["rounds"].__setitem__(r, arrays),
                timeout=120.0)
        except Exception as exc:
            outcome["error"] = exc
            raise

    return app


@pytest.fixture(scope="module")
def study(tmp_path_factory, monkeypatch_module) -> dict[str, Any]:
    """One secure study of rounds 2..3 over 3 simulated sites; what each side saw."""
    out = tmp_path_factory.mktemp("secure")
    outcome: dict[str, Any] = {"rounds": {}, "replies": [], "aggregate_fit": []}
    original = secure_coordinator.SecureFedAvg.aggregate_fit

    def recording_aggregate_fit(self, server_round, results, failures):
        outcome["aggregate_fit"].append([id(fitres.parameters) for _, fitres in results])
        return original(self, server_round, results, failures)

    monkeypatch_module.setattr(secure_coordinator.SecureFedAvg, "aggregate_fit",
                               recording_aggregate_fit)
    started = time.monotonic()
    with warnings.catch_warnings(), ray_environment():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app(outcome), client_app=client_app(out),
                       num_supernodes=SITES, backend_config=loopback_backend_config())
    outcome["seconds"] = time.monotonic() - started
    outcome["nodes"] = {p.stem: dict(np.load(p)) for p in sorted(out.glob("*.npz"))}
    assert "error" not in outcome, outcome.get("error")
    return outcome


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _node_updates(study: dict[str, Any], study_round: int, part: str) -> list[dict]:
    return [{k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(part + "/")}
            for name, arrays in study["nodes"].items() if name.endswith(f"round{study_round}")]


@pytest.mark.integration
def test_nodes_train_the_study_rounds_offset_from_the_first(study):
    seen = sorted(name.rsplit("-round", 1)[1] for name in study["nodes"])
    assert seen == ["2", "2", "2", "3", "3", "3"]
    assert sorted(study["rounds"]) == [2, 3]


@pytest.mark.integration
def test_the_average_is_the_mean_of_the_nodes_updates_within_quantisation(study):
    step, worst = 2 * VaeFamily.secure_range / contract.QUANTIZATION_RANGE, 0.0
    for study_round in (FIRST, LAST):
        updates = _node_updates(study, study_round, "sent")
        assert len(updates) == SITES
        average = study["rounds"][study_round]
        for name, array in average.items():
            mean = np.mean([u[name] for u in updates], axis=0)
            error = float(np.max(np.abs(array.numpy() - mean)))
            worst = max(worst, error)
            assert error <= 1.1 * step  # stochastic rounding, then the float32 cast
            # The sites really differ: the average is not any one site's update.
            assert all(np.max(np.abs(u[name] - mean)) > 100 * step for u in updates)
    print(f"largest |secure average - mean of updates|: {worst:.2e} (step {step:.2e})")
    for received in _node_updates(study, LAST, "received"):
        for name, array in study["rounds"][FIRST].items():
            np.testing.assert_array_equal(received[name], array.numpy())


@pytest.mark.integration
def test_the_final_arrays_keep_the_global_models_names_shapes_and_dtypes(study):
    final, initial = study["final"], study["initial"]
    assert list(final.keys()) == list(initial.keys())
    for name, array in initial.items():
        assert final[name].numpy().shape == array.numpy().shape
        assert final[name].numpy().dtype == array.numpy().dtype
        np.testing.assert_array_equal(final[name].numpy(), study["rounds"][LAST][name].numpy())


@pytest.mark.integration
def test_the_coordinator_never_holds_an_individual_update(study):
    assert [len(set(ids)) for ids in study["aggregate_fit"]] == [1, 1]
    assert [len(ids) for ids in study["aggregate_fit"]] == [SITES, SITES]
    replies = study["replies"]
    assert len(replies) == 4 * SITES * (LAST - FIRST + 1)  # four SecAgg+ stages a round
    for reply in replies:
        assert not reply.has_error()
        assert all(len(record) == 0 for record in reply.content.array_records.values())
        assert keys.SITE not in reply.content and keys.METRICS not in reply.content
        for metrics in reply.content.metric_records.values():
            assert dict(metrics) == {"num_examples": 1}
        if "fitres.metrics" in reply.content:
            assert len(reply.content.config_records["fitres.metrics"]) == 0
    print(f"secure study of {LAST - FIRST + 1} rounds x {SITES} sites: {study['seconds']:.1f} s")


def _strategy(bound: float = VaeFamily.secure_range) -> secure_coordinator.SecureFedAvg:
    reference = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32)),
                             "b": Array(np.zeros(3, np.float32))})
    return secure_coordinator.SecureFedAvg(reference, ConfigRecord(PLAN.to_config()),
                                           first_round=4, min_sites=2, clipping_range=bound)


def _combined(arrays: list[np.ndarray], sites: int = 2) -> list:
    parameters = ndarrays_to_parameters(arrays)
    # The workflow hands one result per surviving node (the proxy names the node).
    return [(GridClientProxy(node_id=10 + site, grid=None, run_id=1),
             FitRes(Status(Code.OK, ""), parameters, 1, {})) for site in range(sites)]


def test_the_strategy_restores_names_and_dtypes_of_the_secure_average():
    strategy = _strategy()
    strategy.aggregate_fit(1, _combined([np.full((2, 3), 0.01), np.full(3, 0.005)]), [])
    assert list(strategy.latest.keys()) == ["w", "b"]
    assert strategy.latest["w"].numpy().dtype == np.float32
    assert strategy.aggregated_round == 1 and strategy.study_round(1) == 4


@pytest.mark.parametrize("arrays, why", [
    ([np.ones((2, 3)), np.full(3, np.nan)], "NaN"),
    ([np.ones((2, 3)), np.full(3, 65.0)], "beyond the secure-aggregation range"),
    ([np.ones((3, 2)), np.ones(3)], "shape"),
    # no average of honest rounds moves a weight by more than the plan's Adam steps allow
    ([np.zeros((2, 3)), np.full(3, 5.0)], "moved by 5, beyond .* cannot be honest"),
    ([np.ones((2, 3))], "layers"),
])
def test_the_strategy_refuses_an_average_it_cannot_trust(arrays, why):
    with pytest.raises(FedsynthError, match=why):
        _strategy().aggregate_fit(1, _combined(arrays), [])


def test_the_strategy_refuses_individual_updates_and_too_few_sites():
    separate = _combined([np.ones((2, 3)), np.ones(3)]) + _combined([np.ones((2, 3)), np.ones(3)])
    with pytest.raises(FedsynthError, match="instead of their secure sum"):
        _strategy().aggregate_fit(1, separate[:2] + separate[2:3], [])
    with pytest.raises(FedsynthError, match="fewer than the plan's min-sites"):
        _strategy().aggregate_fit(1, _combined([np.ones((2, 3)), np.ones(3)], sites=1),
                                  [RuntimeError("dropped")])


@pytest.mark.parametrize("sites, threshold", [(3, 2), (5, 3), (10, 7), (20, 13)])
def test_the_threshold_is_a_strict_majority_and_tolerates_a_third_dropping_out(sites, threshold):
    assert contract.reconstruction_threshold(sites) == threshold
    assert 2 * threshold > sites and sites - threshold >= sites // 3


def test_a_node_refuses_a_setup_whose_threshold_lets_the_coordinator_unmask_it(monkeypatch):
    from flwr.app import RecordDict as Content
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.supercore.task_identity import TaskIdentity

    # Flower stamps messages with the running task's identity, as its engines set it.
    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)

    setup = ConfigRecord({Key.STAGE: "setup", Key.SAMPLE_NUMBER: 5, Key.SHARE_NUMBER: 5,
                          Key.THRESHOLD: 2, Key.CLIPPING_RANGE: 64.0,
                          Key.TARGET_RANGE: 2**26, Key.MOD_RANGE: 2**32, Key.MAX_WEIGHT: 1.0})
    msg = Message(Content({RECORD_KEY_CONFIGS: setup}), dst_node_id=7, message_type="train")
    assert is_secure_message(msg)
    context = Context(run_id=1, node_id=7, node_config={}, state=Content(), run_config={})
    with pytest.raises(FedsynthError, match="threshold of 2 of 5"):
        secure_train(msg, context, lambda content: content)
    setup[Key.THRESHOLD] = 3
    reply = secure_train(msg, context, lambda content: content)
    assert set(reply.content.config_records[RECORD_KEY_CONFIGS]) == {Key.PUBLIC_KEY_1,
                                                                      Key.PUBLIC_KEY_2}


def _collect_stage_at_node_1(monkeypatch, train_reply, plan: dict) -> Callable[[], None]:
    """Three nodes run SecAgg+'s setup and key sharing for real (3 sites, threshold 2);
    returns node 1's masked-vector stage, training with `train_reply` on a plan of
    `plan`'s settings."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.compat.common.recorddict_compat import fitins_to_recorddict
    from flwr.common import FitIns
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)
    nodes = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                          run_config={}) for nid in (1, 2, 3)}

    def stage(nid: int, config: dict, extra: RecordDict | None = None) -> ConfigRecord:
        content = extra or RecordDict()
        content[RECORD_KEY_CONFIGS] = ConfigRecord(config)
        msg = Message(content, dst_node_id=nid, message_type="train")
        reply = secure_train(msg, nodes[nid], train_reply)
        return reply.content.config_records[RECORD_KEY_CONFIGS]

    setup = {Key.STAGE: "setup", Key.SAMPLE_NUMBER: 3, Key.SHARE_NUMBER: 3, Key.THRESHOLD: 2,
             Key.CLIPPING_RANGE: 64.0, Key.TARGET_RANGE: 2**26, Key.MOD_RANGE: 2**32,
             Key.MAX_WEIGHT: 1.0}
    public = {nid: list(stage(nid, setup).values()) for nid in nodes}
    shares = {nid: stage(nid, {Key.STAGE: "share_keys", **{str(k): v for k, v in public.items()}})
              for nid in nodes}
    incoming = [(src, ct) for src, r in shares.items()
                for dst, ct in zip(r[Key.DESTINATION_LIST], r[Key.CIPHERTEXT_LIST]) if dst == 1]
    fitins = fitins_to_recorddict(FitIns(ndarrays_to_parameters([np.zeros(3, np.float32)]),
                                         {contract.ARRAY_NAMES: ["w"], **plan}),
                                  keep_input=True)
    collect = {Key.STAGE: "collect_masked_vectors", Key.SOURCE_LIST: [s for s, _ in incoming],
               Key.CIPHERTEXT_LIST: [c for _, c in incoming]}
    return lambda: stage(1, collect, fitins)


def test_a_node_refuses_to_send_weights_the_quantiser_would_clip(monkeypatch):
    """In the masked-vector stage a node whose trained weights exceed the clipping range
    sends nothing."""
    def too_large(content: RecordDict) -> RecordDict:
        arrays = {k: Array(a.numpy() * 0 + 65.0) for k, a in content[keys.ARRAYS].items()}
        return RecordDict({keys.ARRAYS: ArrayRecord(arrays),
                           keys.METRICS: MetricRecord({keys.WEIGHT: 1.0})})

    collect = _collect_stage_at_node_1(monkeypatch, too_large, {})
    with pytest.raises(FedsynthError, match=re.escape("without clipping: layer w reaches |65|")):
        collect()


@pytest.mark.parametrize("plan, why", [
    ({"min-sites": 4}, "needs at least 4 sites"),
    ({"min-sites": 3, "colluders": 2}, "more than 2 share"),
])
def test_a_node_trains_only_in_a_session_its_plans_shares_are_sized_for(monkeypatch, plan,
                                                                          why):
    """Shares of the noise are sized for sums of min-sites sites with at most `colluders`
    dishonest: a session of fewer sites, or a threshold the colluders reach, is refused
    before anything is trained."""
    trained = []
    collect = _collect_stage_at_node_1(monkeypatch, lambda content: trained.append(1), plan)
    with pytest.raises(FedsynthError, match=why):
        collect()
    assert not trained


def test_masks_are_expanded_from_every_bit_of_their_seed():
    """Flower's expansion folded a 32-byte seed to 32 bits (two seeds with the same XOR
    fold gave the same mask, and 2^32 candidates could be searched); ours uses all of it."""
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    seed = bytes(range(32))
    twin = bytes(range(4, 8)) + bytes(range(4)) + bytes(range(8, 32))  # same XOR fold
    shapes = [(), (3, 4), (5,)]
    assert all(np.array_equal(a, b) for a, b in zip(pseudo_rand_gen(seed, 2**32, shapes),
                                                    pseudo_rand_gen(twin, 2**32, shapes)))
    ours, again = contract.expand_mask(seed, 2**32, shapes), contract.expand_mask(seed, 2**32,
                                                                                 shapes)
    assert [a.shape for a in ours] == shapes
    assert all(np.array_equal(a, b) for a, b in zip(ours, again))  # both sides agree
    other = contract.expand_mask(twin, 2**32, shapes)
    assert not np.array_equal(ours[1], other[1])
    big = contract.expand_mask(seed, 2**32, [(100_000,)])[0]
    assert big.min() >= 0 and big.max() < 2**32 and abs(big.mean() / 2**32 - 0.5) < 0.01
    with pytest.raises(ValueError):
        contract.expand_mask(seed, 1000, shapes)


def test_a_node_sends_no_key_share_when_fewer_sites_than_min_sites_survive(monkeypatch):
    """Shares of the noise are sized for sums of at least min-sites sites: a node refuses
    to help unmask a smaller one, whatever the coordinator says."""
    from flwr.app import RecordDict as Content
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.supercore.task_identity import TaskIdentity

    from node.secure_aggregation import (MIN_SITES, SURVIVORS_STATE,
                                         _refuse_too_few_survivors)

    for attr in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)
    unmask = ConfigRecord({Key.STAGE: "unmask", Key.ACTIVE_NODE_ID_LIST: [7, 8, 9],
                           Key.DEAD_NODE_ID_LIST: [10]})
    state = Content({SURVIVORS_STATE: ConfigRecord({MIN_SITES: 4})})
    context = Context(run_id=1, node_id=7, node_config={}, state=state, run_config={})
    msg = Message(Content({RECORD_KEY_CONFIGS: unmask}), dst_node_id=7, message_type="train")
    with pytest.raises(FedsynthError, match=r"only 3 site\(s\) are left.*min-sites \(4\)"):
        secure_train(msg, context, lambda content: content)
    state.config_records[SURVIVORS_STATE] = ConfigRecord({MIN_SITES: 3})
    _refuse_too_few_survivors(unmask, context)  # three survivors meet min-sites 3


def test_a_plans_list_values_reach_the_node_through_the_legacy_fit_instructions():
    """The ledger heads the coordinator presents at a site's next study are a list; a
    legacy FitIns holds scalars only, so under SecAgg+ they travel beside it. (Every
    SecAgg+ study after a site's first was declined: Flower's conversion raised on them.)"""
    from node.secure_aggregation import train_content
    heads = [f"hospital-01={'a' * 64}", f"hospital-02={'b' * 64}"]
    fitins = RecordDict({
        "fitins.parameters": ArrayRecord({"w": Array(np.ones((2, 2), dtype=np.float32))}),
        "fitins.config": ConfigRecord({contract.ARRAY_NAMES: ["w"], keys.LEDGER_HEADS: heads,
                                       "epsilon": 3.0, "rounds": 2})})
    content = train_content(fitins, ["w"])
    plan = content[keys.PLAN]
    assert list(plan[keys.LEDGER_HEADS]) == heads
    assert (plan["epsilon"], plan["rounds"]) == (3.0, 2) and contract.ARRAY_NAMES not in plan
    assert np.array_equal(content[keys.ARRAYS]["w"].numpy(), np.ones((2, 2)))
