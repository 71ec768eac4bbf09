"""The HTML evaluation report: complete, self-contained, escaped, written atomically."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.evaluation.report.html import render_report, write_report

DANGEROUS = "<script>alert(1)</script>"
AMPERSAND_COLUMN = "height & weight"
COLUMNS = ["age", "sex", "diagnosis", AMPERSAND_COLUMN, "bmi", "stage", "smoker"]
HEADINGS = ["Inputs", "Privacy guarantee", "Headline scores", "Column distributions",
            "Associations between columns", "Utility: train on synthetic, test on real",
            "Survival", "Privacy risk checks", "Representation of categories",
            "Federated evaluation (differentially private)", "How each score is computed"]
# Characters that matter to HTML come up often, any other character now and then.
USER_TEXT = st.one_of(st.sampled_from("<>&\"'/=;#ab "), st.characters())
PNG_URI = re.compile(r'src="data:image/png;base64,([^"]+)"')


def sample_report() -> dict[str, Any]:
    """A full report as `evaluate_cohort` shapes it, with hostile user-supplied names."""
    pairs = [{"a": a, "b": b, "metric": "contingency similarity", "score": 0.60 + 0.015 * i,
              "association_real": 0.3, "association_synthetic": 0.25}
             for i, (a, b) in enumerate(itertools.combinations(COLUMNS, 2))]
    matrix = [[1.0 if i == j else (None if i + j == 3 else 0.1 * (i - j)) for j in range(7)]
              for i in range(7)]
    return {
        "report_version": 1, "title": "Synthetic cohort evaluation: rare-disease registry",
        "schema": {"name": "rare-disease registry", "sha256": "ab" * 32},
        "inputs": {"real": "train.csv", "synthetic": "cohort.csv", "holdout": "holdout.csv",
                   "real_rows": 800, "synthetic_rows": 1000, "holdout_rows": 200},
        "privacy_statement": {
            "private": True, "epsilon_target_per_site": 3.0, "delta_per_site": 1e-5,
            "guarantee": "Each site's records are protected by DP-SGD.",
            "contributors": ["site-a", "site-b"],
            "sites": {"site-a": {"epsilon_spent": 2.98, "delta": 1e-5, "steps": 300},
                      "site-b": {"epsilon_spent": 2.91, "delta": 1e-5, "steps": 300}}},
        "scores": {"column_shapes": 0.91234, "pairwise": 0.88, "strong_associations_kept": 0.75,
                   "tstr_ratio": 0.93, "dcr_share": 0.52, "exact_copies": 0,
                   "exact_copy_share": 0.0, "mia_auc": 0.51, "km_distance": 0.07,
                   "hr_direction_agreement": 1.0, "bias_flags": 2},
        "fidelity": {"columns": [{"column": c, "type": "category", "metric": "1 - TV",
                                  "score": 0.9, "missing_real": 0.01,
                                  "missing_synthetic": 0.0} for c in COLUMNS],
                     "pairs": pairs},
        "utility": {"target": "diagnosis", "task": "classification", "metric": "AUC",
                    "model": "logistic regression", "trtr": 0.81, "tstr": 0.76,
                    "ratio": 0.938, "protocol": "Train on synthetic, test on real."},
        "survival": {"time": "months", "event": "died", "km_distance": 0.07,
                     "km_mean_distance": 0.03, "hr_direction_agreement": 1.0,
                     "hazard_ratios": [{"covariate": "age", "real": 1.8, "synthetic": 1.5,
                                        "real_p": 0.0001, "same_direction": True},
                                       {"covariate": "smoker", "real": 0.9, "synthetic": None,
                                        "real_p": 0.4, "same_direction": None}]},
        "privacy": {"dcr_share": 0.52, "exact_copies": 0, "exact_copy_share": 0.0,
                    "mia_auc": 0.51, "note": "measured against held-out real records"},
        "bias": [{"column": "diagnosis", "category": DANGEROUS, "real": 0.02, "synthetic": 0.0,
                  "ratio": 0.0, "flag": "erased"},
                 {"column": "sex", "category": "female", "real": 0.5, "synthetic": 0.2,
                  "ratio": 0.4, "flag": "shrunk"},
                 {"column": "sex", "category": "male", "real": 0.5, "synthetic": 0.8,
                  "ratio": 1.6, "flag": None}],
        "methods": {"Column shapes": "1 minus the total variation distance.",
                    "DCR share": "Distance to closest record."},
        "figures": {
            "marginals": [
                {"column": "diagnosis", "kind": "discrete", "labels": ["ALS", DANGEROUS],
                 "real": [0.98, 0.02], "synthetic": [1.0, 0.0]},
                {"column": AMPERSAND_COLUMN, "kind": "numeric", "edges": [0.0, 1.0, 2.0, 3.0],
                 "real": [0.2, 0.5, 0.3], "synthetic": [0.25, 0.45, 0.3]}],
            "association": {"columns": COLUMNS, "real": matrix, "synthetic": matrix},
            "km": {"real": {"time": [0.0, 5.0, 12.0], "survival": [1.0, 0.8, 0.6]},
                   "synthetic": {"time": [0.0, 6.0, 12.0], "survival": [1.0, 0.85, 0.55]}}},
        "federated": {
            "sites": {"site-a": {"column_shapes": 0.9, "tstr_auc": None},
                      "site-b": {"column_shapes": 0.8, "tstr_auc": 0.7}},
            "aggregate": {"column_shapes": {"pooled": 0.85, "perfect_cohort": 0.9},
                          "tstr_auc": {"pooled": 0.72, "perfect_cohort": None}},
            "note": "Each site released noisy count tables of its records, once."},
    }


def minimal_report() -> dict[str, Any]:
    """A report from a cohort with no manifest, no figures, no target and no survival."""
    report = sample_report()
    for key in ("figures", "utility", "survival", "privacy_statement", "federated"):
        report[key] = None
    report["scores"].update(tstr_ratio=None, km_distance=None, hr_direction_agreement=None)
    return report


MINIMAL = minimal_report()
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "strong",
                "em", "code", "div", "table", "thead", "tbody", "tr", "th", "td", "span",
                "dl", "dt", "dd", "figure", "img"}


class _PageParser(HTMLParser):
    """The tags of a page and its text nodes, character references decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(sample_report())


def section(page: str, heading: str) -> str:
    """The HTML from `heading` to the next section heading."""
    start = page.index(f"<h2>{heading}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start:] if end < 0 else page[start:end]


def test_full_report_has_every_section_in_order(page: str) -> None:
    assert "This cohort is SYNTHETIC" in page
    positions = [page.index(f"<h2>{heading}</h2>") for heading in HEADINGS]
    assert positions == sorted(positions)


def test_figures_are_embedded_as_png_data_uris(page: str) -> None:
    images = PNG_URI.findall(page)
    assert len(images) == 2 + 1 + 1  # two marginals, the heatmaps, the KM curves
    for encoded in images:
        assert base64.b64decode(encoded, validate=True).startswith(b"\x89PNG\r\n\x1a\n")


def test_page_loads_nothing_from_outside(page: str) -> None:
    lowered = page.lower()
    for forbidden in ('src="http', 'href="http', "<script", "<link", "@import", "url("):
        assert forbidden not in lowered
    assert "content-security-policy" in lowered and "default-src 'none'" in page


def test_user_supplied_strings_appear_only_escaped(page: str) -> None:
    assert DANGEROUS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert AMPERSAND_COLUMN not in page
    assert "height &amp; weight" in page


def test_private_statement_gives_epsilon_delta_per_site(page: str) -> None:
    statement = section(page, "Privacy guarantee")
    assert "(ε = 3, δ = 1e-05) per site, record-level" in statement
    assert "site-a" in statement and "2.980" not in statement and "2.98" in statement


def test_headline_scores_use_three_decimals_and_ideals(page: str) -> None:
    scores = section(page, "Headline scores")
    assert "0.912" in scores and "0.91234" not in scores
    assert "0.5 (≤ 0.6 good)" in scores and "1 (≥ 0.85 good)" in scores


def test_pair_table_shows_fifteen_lowest_of_all_pairs(page: str) -> None:
    associations = section(page, "Associations between columns")
    assert "The 15 lowest-scoring of 21 pairs in all." in associations
    assert associations.count("<tr>") == 1 + 15
    assert "0.600" in associations and f"{0.60 + 0.015 * 20:.3f}" not in associations


def test_flagged_categories_are_highlighted(page: str) -> None:
    bias = section(page, "Representation of categories")
    assert bias.count('<tr class="flagged">') == 2
    assert "⚠ erased" in bias and "⚠ shrunk" in bias


def test_report_without_optional_parts_renders_and_says_guarantee_is_unknown() -> None:
    page = render_report(minimal_report())
    assert "privacy guarantee is unknown" in page
    assert "<img" not in page
    for absent in ("Utility: train on synthetic", "<h2>Survival</h2>", "Federated evaluation"):
        assert absent not in page
    assert "— <span class=\"why\">(no prediction target, or too few labelled real records to score one)</span>" in page
    assert "<h2>Column distributions</h2>" in page  # the fidelity table still shows


def test_non_private_cohort_is_labelled_without_differential_privacy() -> None:
    report = sample_report()
    report["privacy_statement"]["private"] = False
    page = render_report(report)
    assert "without differential privacy" in page.replace("<strong>", "").lower()
    assert "record-level" not in page


def test_write_report_writes_page_and_json_and_no_temp_files(tmp_path: Path) -> None:
    report = minimal_report()
    html_path, json_path = write_report(report, tmp_path / "report.html")
    assert (html_path, json_path) == (tmp_path / "report.html", tmp_path / "report.json")
    assert html_path.read_text(encoding="utf-8") == render_report(report)
    assert json.loads(json_path.read_text(encoding="utf-8")) == report
    report["title"] = "second run"
    write_report(report, html_path)
    assert "second run" in html_path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_write_report_refuses_nan_and_leaves_folder_empty(tmp_path: Path) -> None:
    report = minimal_report()
    report["scores"]["pairwise"] = float("nan")
    with pytest.raises(ValueError):
        write_report(report, tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


@given(label=st.text(USER_TEXT, min_size=1, max_size=30),
       site=st.text(USER_TEXT, min_size=1, max_size=20))
def test_any_user_text_reads_back_verbatim_and_adds_no_tags(label: str, site: str) -> None:
    report = copy.deepcopy(MINIMAL)
    report["bias"][0]["category"] = label
    report["privacy_statement"] = {"private": True, "epsilon_target_per_site": 1.0,
                                   "delta_per_site": 1e-6, "guarantee": "", "contributors": [],
                                   "sites": {site: {"epsilon_spent": 1.0, "delta": 1e-6,
                                                    "steps": 10}}}
    parser = _PageParser()
    parser.feed(render_report(report))
    parser.close()
    assert parser.tags <= ALLOWED_TAGS
    assert label in parser.text and site in parser.text
