"""A node runs only the app bundle its kit pins, and its own installed ClientApp.

Real processes on loopback: the consortium the deployment tests share
(tests/deploy/conftest.py: a TLS SuperLink that enrols node keys, three hospitals running
`fedsynth-node start`). The
coordinator's side is the attacker here: it ships, under fedsynth's own app id and
version, a bundle whose ClientApp returns the site's records file byte for byte (the
attack of issue 16, finding 1) and whose ServerApp keeps whatever comes back. Each node
must refuse that bundle before any of its code runs, and no byte of records may reach
the coordinator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from node.app_task import REFUSED_EXIT
from node.kit import read_kit
from node.sandbox import confines_network
from node.supernode_launch import executor_argv
from protocols.release.app_bundle import project_sha256, release_sha256, write_release_project

from federation import REPO, SHARED_SITES

SITES = SHARED_SITES

# The attacker's ClientApp: importing it leaves a mark, and its handler sends the records.
TAMPERED_CLIENT = '''
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

Path({marker!r}).write_text("the tampered bundle's code ran at a hospital")
app = ClientApp()


def read_site_records(node_config):
    return Path(node_config["data-path"]).read_bytes()


@app.query()
def leak(msg, context):
    records = read_site_records(context.node_config)
    return Message(RecordDict({{"leak": ConfigRecord({{"records": records}})}}), reply_to=msg)
'''

# The attacker's ServerApp: ask every node, keep every reply (or error) in out-dir.
TAMPERED_SERVER = '''
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context) -> None:
    out = Path(context.run_config["out-dir"])
    out.mkdir(parents=True, exist_ok=True)
    nodes = []
    for _ in range(120):
        nodes = list(grid.get_node_ids())
        if len(nodes) >= {n_sites}:
            break
        time.sleep(1)
    asks = [Message(RecordDict({{"ask": ConfigRecord({{"give": "records"}})}}),
                    dst_node_id=node, message_type="query") for node in nodes]
    kept = []
    for reply in grid.send_and_receive(asks, timeout=180):
        if reply.has_error():
            kept.append({{"error": reply.error.reason}})
        else:
            kept.append({{"content": repr(reply.content)}})
    (out / "replies.json").write_text(json.dumps(kept))
'''


def _tampered_project(folder: Path, marker: Path) -> Path:
    project = write_release_project(folder)
    (project / "node" / "client_app.py").write_text(
        textwrap.dedent(TAMPERED_CLIENT.format(marker=str(marker))))
    (project / "coordinator" / "server_app.py").write_text(
        textwrap.dedent(TAMPERED_SERVER.format(n_sites=len(SITES))))
    return project


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_tampered_app_bundle_is_refused_unrun_and_no_record_leaves(consortium, tmp_path):
    marker = tmp_path / "tampered-code-ran"
    project = _tampered_project(tmp_path / "tampered", marker)
    tampered_sha256 = project_sha256(project)
    pinned = read_kit(consortium.kits / SITES[0]).app_sha256
    assert pinned == release_sha256() != tampered_sha256

    # The bundle is what it claims to be: loaded on its own, its handler hands out the records.
    spec = importlib.util.spec_from_file_location("tampered", project / "node" / "client_app.py")
    records_path = consortium.root / f"{SITES[0]}.csv"

    out = tmp_path / "tampered-study"
    status, log = consortium.run_study(out, timeout=400, project=project)
    assert status == 0, log
    replies = json.loads((out / "replies.json").read_text())
    assert len(replies) == len(SITES), replies
    for reply in replies:
        assert "error" in reply, reply
        assert "refused the study's app bundle" in reply["error"]
        assert tampered_sha256 in reply["error"] and pinned in reply["error"]
    assert not marker.exists(), "the tampered bundle's code ran at a node"

    # Not one record reached the coordinator: no patient id of any site, in anything it kept.
    received = (out / "replies.json").read_text() + log + consortium.log("superlink")
    for site in SITES:
        ids = [line.split(",")[0] for line in
               (consortium.root / f"{site}.csv").read_text().splitlines()[1:]]
        assert ids and not any(patient_id in received for patient_id in ids), site
        assert "refused the study's app bundle" in consortium.log(site)

    # Control: the same code, run as Flower would run it, does hand out the records.
    tampered = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tampered)
    assert tampered.read_site_records({"data-path": str(records_path)}) == \
        records_path.read_bytes()
    assert marker.exists()


def test_a_source_checkout_builds_the_pinned_bundle():
    """`flwr run .` from a checkout of the release ships the very bundle a kit pins (the
    studies of test_federation.py run through the pinned executor this way)."""
    assert project_sha256(REPO) == release_sha256()


def test_the_app_process_cannot_read_the_node_key_nor_reach_past_its_supernode(tmp_path):
    """The executor's own sandbox, as it confines each app process: the key and the secret
    unreadable, the records readable, only the runtime port reachable, and no reaching
    into the (unconfined) parent's memory."""
    kit_dir = tmp_path / "kit"
    kit_dir.mkdir()
    key, secret, records = kit_dir / "node-auth.key", tmp_path / "superexec.secret", \
        tmp_path / "records.csv"
    key.write_text("PRIVATE")
    secret.write_bytes(os.urandom(32))
    records.write_text("patient_id,age\np1,40\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        runtime_port = listener.getsockname()[1]
        probe = textwrap.dedent(f"""
            import os, socket, sys
            from pathlib import Path
            from node.sandbox import confine
            parent = os.getppid()
            confine([Path({str(key)!r}), Path({str(secret)!r})], connect_port={runtime_port})
            def can(action):
                try:
                    action()
                    return True
                except OSError:
                    return False
            print({{
                "key": can(lambda: Path({str(key)!r}).read_bytes()),
                "secret": can(lambda: Path({str(secret)!r}).read_bytes()),
                "records": can(lambda: Path({str(records)!r}).read_bytes()),
                "kit-public": can(lambda: Path({str(kit_dir / 'node-auth.pub')!r}).read_bytes()),
                "runtime-port": can(lambda: socket.create_connection(("127.0.0.1", {runtime_port}), 2)),
                "other-port": can(lambda: socket.create_connection(("127.0.0.1", 1), 2)),
                "parent-memory": can(lambda: open(f"/proc/{{parent}}/mem", "rb").read(1)),
            }})
        """)
        (kit_dir / "node-auth.pub").write_text("PUBLIC")
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = eval(result.stdout)  # noqa: S307 - the probe's own dict literal
    # Other ports are closed where the kernel confines connections (Landlock ABI 4+; this
    # machine's is printed by `python -c "from node.sandbox import landlock_abi as a; print(a())"`).
    assert seen == {"key": False, "secret": False, "records": True, "kit-public": True,
                    "runtime-port": True, "other-port": not confines_network(),
                    "parent-memory": False}


def test_the_executor_denies_the_app_the_kits_key_and_its_secret(tmp_path, demo_registry):
    from simulation.cli import main as coordinator_main
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path / "kits"),
                             "--schema", str(schema)]) == 0
    kit = read_kit(tmp_path / "kits" / "siteA")
    argv = executor_argv(kit, tmp_path / "superexec.secret")
    denied = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--deny"]
    assert denied == [str(kit.auth_private_key), str(tmp_path / "superexec.secret")]
    assert argv[argv.index("--app-sha256") + 1] == kit.app_sha256 == release_sha256()
    assert REFUSED_EXIT != 0


def test_an_installed_wheel_builds_the_same_bundle_without_a_checkout(tmp_path):
    """The hash a kit pins is the release's, wherever it is installed: a wheel of this
    checkout, unpacked where no source tree is, rebuilds the very bundle."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    for package in ("protocols", "node", "coordinator", "simulation"):
        shutil.copytree(REPO / package, source / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    installed = tmp_path / "site-packages"
    with zipfile.ZipFile(next(wheels.glob("fedsynth-*.whl"))) as wheel:
        wheel.extractall(installed)
    assert (installed / "protocols" / "release" / "flower_app.toml").is_file()
    result = subprocess.run(
        [sys.executable, "-c", "import protocols.release.app_bundle as bundle; "
         "print(bundle.__file__); print(bundle.release_sha256())"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)})
    where, sha256 = result.stdout.split()
    assert Path(where).is_relative_to(installed), result.stderr
    assert sha256 == release_sha256()
