"""`fedsynth-node start`: a provisioned kit becomes a TLS + node-auth SuperNode command, and
every bad kit or records file is refused with one paragraph before anything connects."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from node.cli import main as node_main
from protocols.release.app_bundle import release_sha256
from protocols.demo_registry import simulate_registry
from simulation.cli import main as coordinator_main


@pytest.fixture(scope="module")
def registry():
    return simulate_registry(seed=0, n_sites=5)


@pytest.fixture
def kit(tmp_path: Path, registry) -> Path:
    schema = tmp_path / "schema.yaml"
    schema.write_text(registry.schema_yaml)
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(tmp_path / "kits"),
                             "--superlink", "fl.consortium.example:9092",
                             "--schema", str(schema)]) == 0
    return tmp_path / "kits" / "siteA"


@pytest.fixture
def records(tmp_path: Path, registry) -> Path:
    path = tmp_path / "site-records.csv"
    registry.sites["hospital-01"].to_csv(path, index=False)
    return path


def _start(capsys, *args: str) -> tuple[int, str, str]:
    code = node_main(["start", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, *args: str) -> str:
    code, out, err = _start(capsys, *args)
    assert code == 2
    assert err.startswith("fedsynth-node: error:") and "Traceback" not in err
    assert err.count("\n") == 1  # one paragraph
    return err


def _command(line: str) -> tuple[dict[str, str], list[str]]:
    """A printed command line: (the environment it runs in, written before it; argv)."""
    argv = shlex.split(line)
    settings = {}
    while "=" in argv[0]:
        name, value = argv.pop(0).split("=", 1)
        settings[name] = value
    return settings, argv


def test_dry_run_prints_a_tls_authenticated_supernode_command(kit, records, capsys):
    code, out, err = _start(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert code == 0, err
    supernode, executor = out.strip().splitlines()
    settings, argv = _command(supernode)
    assert settings["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert Path(argv[0]).name == "flower-supernode"
    flags = dict(zip(argv[1::2], argv[2::2]))
    # It runs no app code: the node's own executor, beside it, runs only the pinned bundle.
    assert flags["--isolation"] == "process"
    assert flags["--superexec-auth-secret-file"] == "$SUPEREXEC_SECRET"
    _, executor_argv = _command(executor)
    assert executor_argv[1:3] == ["-m", "node.app_executor"]
    executor_flags = dict(zip(executor_argv[3::2], executor_argv[4::2]))
    assert executor_flags["--app-sha256"] == release_sha256()
    assert executor_flags["--secret-file"] == "$SUPEREXEC_SECRET"
    assert flags["--superlink"] == "fl.consortium.example:9092"
    assert flags["--root-certificates"] == str(kit.resolve() / "ca.pem")
    assert flags["--auth-supernode-private-key"] == str(kit.resolve() / "node-auth.key")
    assert flags["--port"] == "9094"
    config = flags["--node-config"]
    assert f'data-path="{records.resolve()}"' in config
    assert f'schema-path="{kit.resolve() / "schema.yaml"}"' in config
    assert 'site-name="siteA"' in config and "epsilon-budget=10.0" in config
    assert "delta-budget=0.0001" in config
    assert f'manifest-public-key="{kit.resolve() / "manifest-signing.pub"}"' in config
    assert f'state-dir="{kit.resolve() / "state"}"' in config
    assert "federated-evaluation=true" in config
    assert "--insecure" not in argv and "--allow-runtime-dependency-installation" not in argv
    assert not (kit / "state").exists()  # a dry run changes nothing


def test_a_kit_pinning_another_release_is_refused_naming_both_hashes(kit, records, capsys):
    toml = kit / "node.toml"
    other = "0" * 64
    toml.write_text(toml.read_text().replace(release_sha256(), other))
    err = _refused(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert f"pins the app bundle {other}" in err and release_sha256() in err
    assert "fedsynth-node app-hash" in err


def test_a_kit_without_an_app_pin_is_refused(kit, records, capsys):
    toml = kit / "node.toml"
    toml.write_text(toml.read_text().replace(f'sha256 = "{release_sha256()}"', ""))
    err = _refused(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert "node.toml: [app] sha256 is missing" in err


def test_app_hash_prints_the_installed_release(capsys):
    assert node_main(["app-hash"]) == 0
    assert capsys.readouterr().out.strip() == release_sha256()


def test_runtime_port_override_reaches_the_command(kit, records, capsys):
    code, out, _ = _start(capsys, "--kit", str(kit), "--data", str(records),
                          "--runtime-port", "9195", "--dry-run")
    assert code == 0 and "--port 9195" in out


def test_missing_node_toml_key_is_named(kit, records, capsys):
    toml = kit / "node.toml"
    toml.write_text(toml.read_text().replace('address = "fl.consortium.example:9092"\n', ""))
    err = _refused(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert "node.toml: [superlink] address is missing" in err


def test_invalid_node_toml_value_is_named(kit, records, capsys):
    toml = kit / "node.toml"
    toml.write_text(toml.read_text().replace("runtime-port = 9094", 'runtime-port = "high"'))
    err = _refused(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert "[node] runtime-port = 'high' is not a TCP port number (1-65535)" in err


def test_a_folder_without_node_toml_is_refused(tmp_path, records, capsys):
    err = _refused(capsys, "--kit", str(tmp_path), "--data", str(records), "--dry-run")
    assert "node.toml does not exist" in err


def test_group_readable_private_key_is_refused_with_the_fix(kit, records, capsys):
    (kit / "node-auth.key").chmod(0o640)
    err = _refused(capsys, "--kit", str(kit), "--data", str(records), "--dry-run")
    assert "accessible to group or others" in err and "chmod 600" in err


def test_invalid_records_are_refused(kit, tmp_path, registry, capsys):
    frame = registry.sites["hospital-01"].copy()
    frame.loc[frame.index[2], "subtype"] = "unknown-subtype"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    err = _refused(capsys, "--kit", str(kit), "--data", str(bad), "--dry-run")
    assert "bad.csv: row 3, column 'subtype', value 'unknown-subtype'" in err


def test_a_site_below_the_floor_is_told_before_the_node_starts(kit, tmp_path, registry,
                                                              capsys):
    """The node never declines a study for its size (that would tell the coordinator):
    the operator is told here, before anything connects."""
    small = tmp_path / "small.csv"
    registry.sites["hospital-01"].iloc[:12].to_csv(small, index=False)
    err = _refused(capsys, "--kit", str(kit), "--data", str(small), "--dry-run")
    assert "holds 12 records, fewer than the 20 any study needs" in err


def test_a_synthetic_cohort_is_refused_as_records(kit, tmp_path, registry, capsys):
    release = tmp_path / "release"
    release.mkdir()
    cohort = release / "synthetic.csv"
    registry.sites["hospital-02"].to_csv(cohort, index=False)
    (release / "manifest.json").write_text(json.dumps({"files": {"synthetic.csv": {}}}))
    err = _refused(capsys, "--kit", str(kit), "--data", str(cohort), "--dry-run")
    assert "SYNTHETIC" in err and "manifest.json" in err and "--train-on-synthetic" in err
    code, out, _ = _start(capsys, "--kit", str(kit), "--data", str(cohort), "--dry-run",
                          "--train-on-synthetic")
    assert code == 0 and 'train-on-synthetic=true' in out  # the node will say so in replies


def test_a_cohort_parquet_copied_away_from_its_manifest_is_still_recognised(
        kit, tmp_path, registry, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from protocols.release.provenance import marked_table

    cohort = tmp_path / "looks-like-an-extract.parquet"
    table = pa.Table.from_pandas(registry.sites["hospital-02"], preserve_index=False)
    pq.write_table(marked_table(table, "0" * 64), cohort)
    err = _refused(capsys, "--kit", str(kit), "--data", str(cohort), "--dry-run")
    assert "SYNTHETIC" in err and "Parquet metadata" in err
    schema = kit / "schema.yaml"
    assert node_main(["check", "--schema", str(schema), "--data", str(cohort)]) == 0
    assert "SYNTHETIC fedsynth cohort (marked as one in its Parquet metadata)" in (
        capsys.readouterr().out)


def test_start_without_records_names_the_missing_option(kit, capsys):
    err = _refused(capsys, "--kit", str(kit), "--dry-run")
    assert "--data" in err


def test_budget_reads_the_state_folder_and_budget_from_the_kit(kit: Path, capsys) -> None:
    assert node_main(["budget", "--kit", str(kit)]) == 0
    out = capsys.readouterr().out
    assert f"Privacy ledger {kit.resolve()}" in out or f"Privacy ledger {kit}" in out
    assert "No study has run at this site yet" in out and "left" in out
    assert "Delta budget 0.0001; committed 0; left 0.0001." in out


def test_a_head_file_at_the_earlier_default_is_read_there_then_moved_out_of_the_keys_folder(
        kit, records):
    """Its default folder is its own since the app sandbox grants the key's folder file by
    file (a head replaced there would be unreadable to the app)."""
    from node.kit import prepare_state_dir, read_kit
    legacy = kit / "ledger-head"
    legacy.write_text("a" * 64 + "\n")
    node_kit = read_kit(kit)
    assert node_kit.ledger_head_file == legacy.resolve()
    prepare_state_dir(node_kit)
    moved = kit.resolve() / "ledger-anchor" / "ledger-head"
    assert not legacy.exists() and moved.read_text() == "a" * 64 + "\n"
    assert read_kit(kit).ledger_head_file == moved
