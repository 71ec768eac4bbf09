"""A real 3-site study in Flower's simulation engine, through the real CLIs.

Subprocesses run `fedsynth-coordinator simulate` and `fedsynth-node check`
exactly as a user would; Ray stays on loopback.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from protocols.schema import parse_schema

pytestmark = pytest.mark.integration
SITES = ("hospital-01", "hospital-02", "hospital-03")
# The VAE family, named: most tests here pin its per-round training; the last one runs the
# default family with the defaults a 3-site study gets.
SMALL_PLAN = ["--generator", "vae", "--rounds", "2", "--local-steps", "3", "--rows", "300",
              "--seed", "5"]


def _cli(tool, *args, timeout=300):
    code = f"import sys; from {tool}.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sites(tmp_path_factory, demo_registry):
    folder = tmp_path_factory.mktemp("sites")
    (folder / "schema.yaml").write_text(demo_registry.schema_yaml)
    paths = []
    for name in SITES:
        path = folder / f"{name}.csv"
        demo_registry.sites[name].to_csv(path, index=False)
        paths.append(path)
    return folder / "schema.yaml", paths


def _simulate(sites, out, *extra, plan=SMALL_PLAN):
    schema, paths = sites
    data = [arg for p in paths for arg in ("--data", p)]
    return _cli("simulation", "simulate", "--schema", schema, *data, "--out", out,
                *plan, *extra)


@pytest.fixture(scope="module")
def private_study(sites, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = _simulate(sites, out, "--epsilon", "2", "--evaluation-epsilon", "0.5",
                       "--no-secure-aggregation")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_study_progress_is_visible_round_by_round(private_study):
    _, result = private_study
    assert "round 1/2" in result.stdout and "round 2/2" in result.stdout


def test_cohort_validates_against_the_schema(private_study, sites):
    out, _ = private_study
    check = _cli("node", "check", "--schema", sites[0], "--data", out / "synthetic.csv")
    assert check.returncode == 0, check.stderr
    assert "SYNTHETIC" in check.stdout
    check = _cli("node", "check", "--schema", sites[0], "--data", out / "synthetic.parquet")
    assert check.returncode == 0, check.stderr


def test_manifest_is_consistent_with_the_study(private_study, sites):
    out, _ = private_study
    manifest = json.loads((out / "manifest.json").read_text())
    schema = parse_schema(sites[0].read_text())
    assert manifest["synthetic"] is True
    assert manifest["schema_sha256"] == schema.sha256
    assert manifest["engine"] == "simulation" and manifest["tls"] is False
    # Flower's simulation engine runs the apps it is handed: a run id, and no bundle's hash.
    assert manifest["flower_run_id"].isdigit() and manifest["app_sha256"] is None
    assert len(manifest["plan"]["study-nonce"]) == 32
    assert manifest["secure_aggregation"] is False
    assert manifest["contributions"] == {name: [1, 2] for name in SITES}
    assert (manifest["rows"], manifest["rounds"], manifest["seed"]) == (300, 2, 5)
    assert manifest["n_sites"] == 3 and manifest["contributors"] == list(SITES)
    assert manifest["trained_on_synthetic"] == []
    privacy = manifest["privacy"]
    assert privacy["private"] is True and privacy["epsilon_target_per_site"] == 2.0
    assert privacy["site_sizes_disclosed"] == "no"
    assert privacy["evaluation_epsilon"] == 0.5
    assert privacy["neighbouring"] == "add or remove one patient's record at one site"
    assert privacy["statement"].startswith("Each hospital's patients are protected by "
                                           "(2, 1e-05)-differential privacy")
    for name in SITES:
        site = privacy["sites"][name]
        assert 0 < site["epsilon_spent"] <= 2.0
        assert site["delta"] == 1e-5 and site["steps"] == 6
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    assert sum(1 for _ in (out / "synthetic.csv").open()) == 301


def test_parquet_cohort_carries_a_synthetic_marker(private_study):
    out, _ = private_study
    metadata = pq.read_schema(out / "synthetic.parquet").metadata
    assert json.loads(metadata[b"fedsynth"])["synthetic"] is True


def test_the_released_cohort_verifies_against_this_coordinators_own_key(private_study, capsys):
    """Without --signing-key the study signs with the user's key, made once under
    XDG_CONFIG_HOME (a temporary folder in tests); a site checks it with the public half."""
    from node.cli import main as node_main

    out, result = private_study
    fingerprint = json.loads((out / "manifest.json").read_text())["signature"]["key_fingerprint"]
    assert f"signed by key {fingerprint}" in result.stdout
    public = Path(os.environ["XDG_CONFIG_HOME"]) / "fedsynth" / "manifest-signing.pub"
    assert node_main(["verify", str(out), "--public-key", str(public)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"verified: 2 files, signed by key {fingerprint} (trusted)")
    assert "Not covered by the signature: report.html, report.json." in summary


def test_every_round_is_checkpointed(private_study):
    out, _ = private_study
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["released.json", "round-0001.json", "round-0001.pt", "round-0002.json",
                     "round-0002.pt"]
    assert not (out / ".simulated-nodes").exists()  # the simulated ledgers go with the run


def test_non_private_reference_says_it_is_not_private(sites, tmp_path):
    result = _simulate(sites, tmp_path, "--epsilon", "inf")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["privacy"]["private"] is False
    assert all(s["epsilon_spent"] is None for s in manifest["privacy"]["sites"].values())
    assert "NONE" in result.stdout
    assert not math.isnan(manifest["rows"])


def test_cohort_keeps_every_declared_category_alive(private_study, sites):
    """Categories are sampled from the decoder's softmax, so none is erased."""
    import torch

    from protocols.generators import family_for
    from protocols.plan import StudyPlan

    out, _ = private_study
    schema = parse_schema(sites[0].read_text())
    plan = StudyPlan(rounds=2, local_steps=3, rows=20000, seed=6)
    final = {name: tensor.numpy()
             for name, tensor in torch.load(out / "checkpoints" / "round-0002.pt").items()}
    cohort = family_for(plan).sample(schema, plan, final, lambda _: final)
    for column in schema.features:
        if column.type == "categorical":
            assert set(cohort[column.name].dropna()) == set(column.categories), column.name


def test_every_site_releases_noisy_tables_once_and_the_report_holds_only_their_scores(
        private_study):
    out, result = private_study
    report = json.loads((out / "report.json").read_text())
    federated = report["federated"]
    assert sorted(federated["sites"]) == list(SITES)
    for scores in federated["sites"].values():
        assert 0 < scores["column_shapes"] <= 1
    pooled = federated["aggregate"]["column_shapes"]
    assert report["scores"]["column_shapes"] == pooled["pooled"]
    assert 0 < pooled["perfect_cohort"] <= 1
    assert federated["evaluation_epsilon"] == 0.5
    assert report["figures"] is None and report["fidelity"] is None  # no real record here
    assert report["privacy_statement"]["epsilon_target_per_site"] == 2.0
    assert (out / "report.html").read_text().count("<img") == 0
    assert "federated evaluation: 3 sites released noisy tables" in result.stdout


def test_a_site_file_that_is_a_released_cohort_is_refused_before_anything_runs(
        private_study, sites, tmp_path, capsys):
    from simulation.cli import main
    schema, paths = sites
    cohort = private_study[0] / "synthetic.csv"
    code = main(["simulate", "--schema", str(schema), "--data", str(paths[0]), "--data",
                 str(cohort), "--out", str(tmp_path / "out"), *SMALL_PLAN])
    err = capsys.readouterr().err
    assert code == 2 and "is a SYNTHETIC fedsynth cohort (listed in" in err
    assert "--train-on-synthetic" in err and not (tmp_path / "out").exists()


def test_a_secure_aggregation_study_records_it_and_each_site_reports_its_own_epsilon(
        private_study, sites, tmp_path):
    """Each site's report also says whether its operator let it train on a cohort: here
    the third site is a released cohort (its Parquet), explicitly allowed. Without
    federated evaluation, an earlier study's report in the folder does not survive."""
    schema, paths = sites
    cohort = private_study[0] / "synthetic.parquet"
    (tmp_path / "report.html").write_text("an earlier study's report")
    result = _simulate((schema, [*paths[:2], cohort]), tmp_path, "--epsilon", "2",
                       "--secure-aggregation", "--train-on-synthetic")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "combined by SecAgg+" in result.stdout
    assert not (tmp_path / "report.html").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["secure_aggregation"] is True and manifest["plan"]["secure-aggregation"]
    names = [*SITES[:2], "synthetic"]
    assert manifest["contributions"] == {name: [1, 2] for name in names}
    assert manifest["trained_on_synthetic"] == ["synthetic"]
    for name in names:  # from each site's ledger, sent after training
        site = manifest["privacy"]["sites"][name]
        assert 0 < site["epsilon_spent"] <= 2.0 and site["steps"] == 6
        assert site["synthetic_input"] is (name == "synthetic")


def test_by_default_three_sites_run_the_marginals_family_each_adding_a_share_of_the_noise(
        sites, tmp_path):
    """With no plan flags, three sites get the default family under SecAgg+: all three
    required in every sum, one may collude, so each adds a share of the noise whose two
    honest shares make the central noise. The manifest states the ε against a coordinator
    running SecAgg+ and the larger one if it failed."""
    result = _simulate(sites, tmp_path, "--epsilon", "3", plan=["--rows", "300"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "secure aggregation: on by default with 3 sites" in result.stdout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["secure_aggregation"] is True
    assert {k: manifest["plan"][k] for k in ("generator", "rounds", "min-sites", "colluders")} \
        == {"generator": "marginals", "rounds": 2, "min-sites": 3, "colluders": 1}
    privacy = manifest["privacy"]
    assert privacy["noise"].startswith("shares:") and privacy["colluders_tolerated"] == 1
    assert privacy["epsilon_if_secure_aggregation_fails"] > 3.0
    assert "If secure aggregation failed" in privacy["statement"]
    for site in privacy["sites"].values():  # each site's own ledger: the secure-sum epsilon
        assert 2.99 <= site["epsilon_spent"] <= 3.0
