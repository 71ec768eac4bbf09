"""The hospital's caps on one study, checked by the real ClientApp before anything runs.

Each cap is exceeded by one plan; the node declines with the one fixed text, and its
log names the cap, the plan's value and the node.toml key. Nothing reaches the
ledger. A plan with hidden = 10^5 (2 * 10^10 weights on the demo schema) is refused
in a separate process whose address space is capped at a few GB, so any attempt to
build the model would fail there instead of being refused.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client_calls import issued, node_context, train_message
from node.client_app import SiteRefusal, build_client_app
from node.kit import read_kit
from node.study_caps import StudyCaps
from node.supernode_launch import node_config
from protocols import messages as keys
from protocols.kit_layout import KitError
from protocols.generators import family_for
from protocols.plan import StudyPlan
from simulation.cli import main as coordinator_main

REPO = Path(__file__).resolve().parents[2]
PLAN = StudyPlan(epsilon=2.0, rounds=2, local_steps=3, sample_rate=0.2, hidden=16, latent=4)


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.supercore.task_identity import TaskIdentity
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _refused(call, caplog, detail: str) -> str:
    with caplog.at_level(logging.ERROR, logger="node.client_app"):
        with pytest.raises(SiteRefusal) as raised:
            call()
    assert str(raised.value) == keys.DECLINED
    assert detail in caplog.text, caplog.text
    return caplog.text


@pytest.mark.parametrize("cap, plan, detail", [
    ({"max-epsilon-per-study": 1.5}, PLAN,
     "epsilon for the study = 2, above this site's cap of 1.5 "
     "(node.toml [limits] max-epsilon-per-study)"),
    ({"max-delta-per-study": 5e-6}, PLAN,
     "delta for the study = 1e-05, above this site's cap of 5e-06 "
     "(node.toml [limits] max-delta-per-study)"),
    ({"max-rounds-times-steps": 5}, PLAN,
     "rounds x local steps (2 x 3) = 6, above this site's cap of 5 "
     "(node.toml [limits] max-rounds-times-steps)"),
    ({"max-model-parameters": 1000}, PLAN,
     "a vae model of this many values (hidden 16, latent 4) = "),
    ({}, PLAN.with_overrides(epsilon=20.0),  # the defaults, with no [limits] at all
     "above this site's cap of 5 (node.toml [limits] max-epsilon-per-study)"),
    ({}, PLAN.with_overrides(rounds=50, local_steps=50),
     "(50 x 50) = 2500, above this site's cap of 2000"),
])
def test_a_plan_beyond_a_cap_is_refused_naming_cap_value_and_key(site_files, demo_schema,
                                                                  caplog, cap, plan, detail):
    context = node_context(*site_files, **cap)
    log = _refused(lambda: build_client_app()(train_message(demo_schema, plan)[0], context),
                   caplog, detail)
    assert "raises" in log and "in node.toml and restarts the node" in log
    assert not (site_files[1].parent / "node-state").exists()  # nothing touched the ledger


def test_a_plan_within_the_caps_is_answered(site_files, demo_schema):
    context = node_context(*site_files, **{"max-epsilon-per-study": 2.0,
                                           "max-rounds-times-steps": 6,
                                           "max-model-parameters": 100_000})
    reply = build_client_app()(train_message(demo_schema, PLAN)[0], context)
    assert not reply.has_error()


def test_the_model_is_counted_without_allocating_it(demo_schema):
    def values(plan):
        return family_for(plan).model_values(demo_schema, plan)

    small = values(PLAN)
    assert small == sum(a.size for a in family_for(PLAN).global_arrays(demo_schema, PLAN).values())
    assert 1000 < small < 100_000
    assert values(PLAN.with_overrides(hidden=100_000)) > 10**10
    marginals = StudyPlan(epsilon=2.0, rounds=2, generator="marginals")
    assert values(marginals) == sum(
        a.size for a in family_for(marginals).global_arrays(demo_schema, marginals).values())
    assert values(marginals) == values(marginals.with_overrides(hidden=100_000))  # the schema's


_HUGE_PLAN_SCRIPT = textwrap.dedent("""
    import logging, resource, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from client_calls import issued, node_context, train_message
    from node.client_app import SiteRefusal, build_client_app
    from protocols import messages as keys
    from protocols.plan import StudyPlan
    from protocols.schema import load_schema

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    logging.basicConfig(level=logging.ERROR)
    schema = load_schema({schema!r})
    small = StudyPlan(rounds=1, local_steps=2, hidden=8, latent=2)
    message, _ = train_message(schema, small)  # a small model's arrays...
    huge = small.with_overrides(hidden=100_000)  # ...under a plan of 2e10 weights
    message.content[keys.PLAN].update(issued(huge).to_config())
    limit = 4 * 2**30  # far below the 80 GB the plan's model would take
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        build_client_app()(message, node_context(Path({schema!r}), Path({data!r})))
    except SiteRefusal:
        print("DECLINED")
""")


def test_a_plan_with_hidden_ten_to_the_five_is_refused_before_any_weight_exists(site_files):
    schema_path, data_path = site_files
    script = _HUGE_PLAN_SCRIPT.format(tests=str(REPO / "tests" / "node"),
                                      schema=str(schema_path), data=str(data_path))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "DECLINED" in result.stdout
    assert "max-model-parameters" in output and "hidden 100000" in output
    assert "MemoryError" not in output and "Traceback" not in output


def test_a_cohort_beyond_the_rows_cap_is_not_scored(site_files, demo_schema, caplog):
    plan = PLAN.with_overrides(evaluation_epsilon=0.5, rows=100)
    cohort = ("a,b\n" + "1,2\n" * 5000).encode()
    config = ConfigRecord({**issued(plan).to_config(), keys.SCHEMA_SHA256: demo_schema.sha256})
    message = Message(content=RecordDict({
        keys.PLAN: config,
        keys.COHORT: ConfigRecord({keys.COHORT_CSV: cohort, keys.COHORT_MANIFEST: b"{}"})}),
        dst_node_id=1, message_type="evaluate")
    context = node_context(*site_files, **{"max-rows-to-score": 1000,
                                           "manifest-public-key": "/nonexistent.pub"})
    _refused(lambda: build_client_app()(message, context), caplog,
             "a cohort of this many rows to score = 5000, above this site's cap of 1000 "
             "(node.toml [limits] max-rows-to-score)")


# ---------------------------------------------------------------- node.toml

@pytest.fixture
def kit_dir(tmp_path) -> Path:
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path)]) == 0
    return tmp_path / "siteA"


def test_node_toml_limits_reach_the_supernodes_node_config(kit_dir):
    assert read_kit(kit_dir).caps == StudyCaps()  # none set: the documented defaults
    with (kit_dir / "node.toml").open("a") as toml:
        toml.write("\n[limits]\nmax-epsilon-per-study = 2\nmax-model-parameters = 50000\n")
    kit = read_kit(kit_dir)
    assert (kit.caps.max_epsilon, kit.caps.max_model_parameters) == (2.0, 50_000)
    config = node_config(kit)
    assert "max-epsilon-per-study=2.0" in config and "max-model-parameters=50000" in config
    assert "max-delta-per-study=1e-05" in config and "max-rows-to-score=100000" in config
    assert f'ledger-head-file="{kit_dir.resolve() / "ledger-anchor" / "ledger-head"}"' in config


@pytest.mark.parametrize("line, detail", [
    ("max-model-parameters = -3", "[limits] max-model-parameters = -3 must be at least 1"),
    ("max-epsilon-per-study = \"lots\"", "[limits] max-epsilon-per-study"),
    ("max-delta-per-study = 2", "[limits] max-delta-per-study"),
    ("max-epsilon = 2", "[limits] max-epsilon is not a cap"),  # misspelt: not ignored
])
def test_a_bad_cap_is_named_with_its_file_and_key(kit_dir, line, detail):
    with (kit_dir / "node.toml").open("a") as toml:
        toml.write(f"\n[limits]\n{line}\n")
    with pytest.raises(KitError) as raised:
        read_kit(kit_dir)
    assert str(kit_dir.resolve() / "node.toml") in str(raised.value)
    assert detail in str(raised.value)
