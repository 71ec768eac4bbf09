"""`fedsynth-coordinator evaluate` and `fedsynth-node evaluate` on real files."""

import json

import pandas as pd
import pytest

from node.cli import main as node_main
from simulation.cli import main as coordinator_main


@pytest.fixture
def files(tmp_path, demo_registry):
    (tmp_path / "schema.yaml").write_text(demo_registry.schema_yaml)
    for name in ("hospital-04", "hospital-05", "hospital-06"):
        demo_registry.sites[name].to_csv(tmp_path / f"{name}.csv", index=False)
    return tmp_path


def _coordinator_evaluate(folder, out, *extra):
    return coordinator_main(["evaluate", "--schema", str(folder / "schema.yaml"),
                             "--real", str(folder / "hospital-05.csv"),
                             "--real", str(folder / "hospital-06.csv"),
                             "--synthetic", str(folder / "hospital-04.csv"),
                             "--out", str(out), *extra])


def test_coordinator_evaluate_writes_the_page_and_its_json(files, capsys, demo_registry):
    out = files / "report.html"
    assert _coordinator_evaluate(files, out, "--holdout", str(files / "hospital-04.csv")) == 0
    report = json.loads((files / "report.json").read_text())
    sizes = {name: len(frame) for name, frame in demo_registry.sites.items()}
    assert report["inputs"]["real_rows"] == sizes["hospital-05"] + sizes["hospital-06"]
    assert report["scores"]["dcr_share"] is not None
    assert report["privacy_statement"] is None  # no manifest beside the cohort
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") or page.lstrip().lower().startswith("<!doctype")
    assert "column shapes" in capsys.readouterr().out


def test_node_evaluate_scores_the_cohort_against_the_sites_own_records(files, demo_registry):
    out = files / "site-report.html"
    assert node_main(["evaluate", "--schema", str(files / "schema.yaml"),
                      "--data", str(files / "hospital-06.csv"),
                      "--synthetic", str(files / "hospital-05.csv"), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["inputs"]["real_rows"] == len(demo_registry.sites["hospital-06"])
    assert report["scores"]["dcr_share"] is None  # needs a holdout
    assert report["utility"]["target"] == "treated"


def test_a_bad_cohort_is_refused_with_its_row_and_nothing_is_written(files, capsys):
    bad = (files / "hospital-04.csv").read_text().splitlines()
    header = bad[0].split(",")
    row = bad[3].split(",")
    row[header.index("subtype")] = "made-up"
    bad[3] = ",".join(row)
    (files / "hospital-04.csv").write_text("\n".join(bad) + "\n")
    assert _coordinator_evaluate(files, files / "report.html") == 2
    err = capsys.readouterr().err
    assert "hospital-04.csv" in err and "subtype" in err and "made-up" in err
    assert "Traceback" not in err
    assert not (files / "report.html").exists() and not (files / "report.json").exists()


@pytest.mark.parametrize("out, rule", [("report.txt", ".html file"),
                                       ("missing-folder/report.html", "does not exist")])
def test_a_bad_report_path_is_refused(files, capsys, out, rule):
    assert _coordinator_evaluate(files, files / out) == 2
    assert rule in capsys.readouterr().err


def test_evaluate_never_overwrites_an_input(files, capsys):
    target = files / "hospital-05.html"
    (files / "hospital-05.json").write_text("{}")
    code = coordinator_main(["evaluate", "--schema", str(files / "schema.yaml"),
                             "--real", str(files / "hospital-05.json"),
                             "--synthetic", str(files / "hospital-04.csv"), "--out", str(target)])
    assert code == 2 and "would overwrite" in capsys.readouterr().err
    assert (files / "hospital-05.json").read_text() == "{}"


def test_a_manifest_beside_the_cohort_gives_the_privacy_statement(files):
    manifest = {"files": {"hospital-04.csv": {}}, "contributors": ["a"],
                "privacy": {"private": True, "epsilon_target_per_site": 3.0,
                            "delta_per_site": 1e-5, "guarantee": "g", "sites": {}}}
    (files / "manifest.json").write_text(json.dumps(manifest))
    assert _coordinator_evaluate(files, files / "report.html") == 0
    statement = json.loads((files / "report.json").read_text())["privacy_statement"]
    assert statement["epsilon_target_per_site"] == 3.0


def test_a_cohort_with_no_survival_time_known_is_reported_with_the_reason(files, capsys):
    schema = (files / "schema.yaml").read_text()
    head, tail = schema.split("- name: survival_months\n", 1)
    (files / "schema.yaml").write_text(
        head + "- name: survival_months\n" + tail.replace("nullable: false", "nullable: true", 1))
    cohort = pd.read_csv(files / "hospital-04.csv", dtype=str, keep_default_na=False)
    cohort["survival_months"] = ""
    cohort.to_csv(files / "hospital-04.csv", index=False)
    assert _coordinator_evaluate(files, files / "report.html") == 0
    assert "Traceback" not in capsys.readouterr().err
    report = json.loads((files / "report.json").read_text())
    assert report["scores"]["km_distance"] is None and report["figures"]["km"] is None
    assert "no record with its time and event known" in (files / "report.html").read_text()


def test_a_typed_parquet_cohort_scores_exactly_as_its_csv(files, demo_registry):
    cohort = demo_registry.sites["hospital-04"].copy()
    cohort["diagnosis_date"] = pd.to_datetime(cohort["diagnosis_date"])
    for name in ("treated", "death"):
        cohort[name] = cohort[name].astype("boolean")
    cohort["ecog"] = cohort["ecog"].astype("Int64")
    cohort.to_parquet(files / "cohort.parquet")
    assert _coordinator_evaluate(files, files / "csv.html") == 0
    assert coordinator_main(["evaluate", "--schema", str(files / "schema.yaml"),
                             "--real", str(files / "hospital-05.csv"),
                             "--real", str(files / "hospital-06.csv"),
                             "--synthetic", str(files / "cohort.parquet"),
                             "--out", str(files / "parquet.html")]) == 0
    scores = [json.loads((files / f"{n}.json").read_text())["scores"] for n in ("csv", "parquet")]
    assert scores[0] == scores[1]


@pytest.mark.parametrize("rows, code", [(20, 0), (19, 2)])
def test_twenty_rows_are_the_minimum_for_every_input(files, capsys, rows, code):
    for name in ("hospital-04", "hospital-05", "hospital-06"):
        frame = pd.read_csv(files / f"{name}.csv", dtype=str, keep_default_na=False)
        frame.iloc[:rows].to_csv(files / f"{name}.csv", index=False)
    assert _coordinator_evaluate(files, files / "report.html",
                                 "--holdout", str(files / "hospital-04.csv")) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code:
        assert "at least 20" in err and not (files / "report.json").exists()
    else:
        json.loads((files / "report.json").read_text())
