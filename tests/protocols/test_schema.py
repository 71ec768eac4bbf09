"""Tests for the consortium's data dictionary: parsing, refusals and the contract hash."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from protocols.errors import FedsynthError, SchemaError
from protocols.records import validate_records
from protocols.schema import Schema, load_schema, parse_schema

VALID = """
name: cohort
description: A small registry.
columns:
  - name: patient_id
    type: identifier
  - name: age
    type: integer
    min: 0
    max: 90
  - name: weight
    type: numeric
    min: 2.5
    max: 250
    nullable: true
    description: Body weight in kg.
  - name: subtype
    type: categorical
    categories: [classic, attenuated, "yes"]
  - name: treated
    type: boolean
  - name: diagnosed
    type: date
    min: 2000-01-01
    max: "2025-12-31"
    nullable: true
"""


def _with_column(entry: str) -> str:
    """A schema with one good column followed by `entry` (a YAML flow mapping)."""
    return textwrap.dedent(f"""
        name: s
        columns:
          - {{name: ok_column, type: integer, min: 0, max: 5}}
          - {entry}
    """)


def test_schema_parses_a_valid_dictionary() -> None:
    schema = parse_schema(VALID)
    assert schema.name == "cohort"
    assert [c.name for c in schema.columns] == [
        "patient_id", "age", "weight", "subtype", "treated", "diagnosed"]
    assert [c.name for c in schema.features] == ["age", "weight", "subtype", "treated", "diagnosed"]
    assert [c.name for c in schema.identifiers] == ["patient_id"]
    age, weight = schema.column("age"), schema.column("weight")
    assert (age.type, age.low, age.high, age.nullable) == ("integer", 0, 90, False)
    assert isinstance(age.low, int) and isinstance(age.high, int)
    assert (weight.low, weight.high, weight.nullable) == (2.5, 250.0, True)
    assert weight.description == "Body weight in kg."
    assert schema.column("subtype").categories == ("classic", "attenuated", "yes")
    assert schema.column("treated").categories == ("false", "true")
    diagnosed = schema.column("diagnosed")
    assert diagnosed.low == (dt.date(2000, 1, 1) - dt.date(1970, 1, 1)).days
    assert diagnosed.high == (dt.date(2025, 12, 31) - dt.date(1970, 1, 1)).days
    with pytest.raises(KeyError):
        schema.column("nope")


def test_demo_schema_parses(demo_schema: Schema) -> None:
    assert demo_schema.name == "fedsynth-demo-registry"
    assert [c.name for c in demo_schema.identifiers] == ["patient_id"]
    assert len(demo_schema.features) == 11


def test_schema_canonical_yaml_parses_back_to_the_same_contract() -> None:
    schema = parse_schema(VALID)
    again = parse_schema(schema.to_yaml())
    assert again.sha256 == schema.sha256
    assert again.columns == tuple(dataclasses.replace(c, description="") for c in schema.columns)


@pytest.mark.parametrize(
    ("entry", "column", "fragment"),
    [
        ("{name: weight, type: numeric, min: 10, max: 5}", "weight", "greater than max"),
        ("{name: born, type: date, min: 2020-01-01, max: 2019-12-31}", "born", "greater than max"),
        ("{name: colour, type: categorical, categories: []}", "colour", "needs a non-empty list"),
        ("{name: colour, type: categorical}", "colour", "needs a non-empty list"),
        ("{name: colour, type: categorical, categories: [red, red]}", "colour", "listed twice"),
        ("{name: colour, type: categorical, categories: [' red']}", "colour", "surrounding spaces"),
        ("{name: colour, type: categorical, categories: [1.5]}", "colour", "quote it"),
        ("{name: ok_column, type: boolean}", "ok_column", "declared twice"),
        ("{name: height, type: float, min: 0, max: 3}", "height", "type 'float'"),
        ("{name: height, min: 0, max: 3}", "height", "type None"),
        ("{name: colour, type: categorical, catagories: [a, b]}", "colour", "catagories"),
        ("{name: height, type: numeric, max: 3}", "height", "needs both 'min' and 'max'"),
        ("{name: height, type: integer, min: 0}", "height", "needs both 'min' and 'max'"),
        ("{name: born, type: date, min: 2000-01-01}", "born", "needs both 'min' and 'max'"),
        ("{name: height, type: numeric, min: low, max: 3}", "height", "'low' is not a number"),
        ("{name: height, type: numeric, min: 0, max: 'tall'}", "height", "'tall' is not a number"),
        ("{name: height, type: numeric, min: 0, max: true}", "height", "True is not a number"),
        ("{name: height, type: numeric, min: 0, max: .inf}", "height", "not a finite number"),
        ("{name: height, type: integer, min: 0.5, max: 3}", "height", "not a whole number"),
        ("{name: born, type: date, min: '2000-13-01', max: 2001-01-01}", "born", "YYYY-MM-DD"),
        ("{name: born, type: date, min: 2000, max: 2001}", "born", "YYYY-MM-DD"),
        ("{name: flag, type: boolean, min: 0, max: 1}", "flag", "'min'/'max' only apply"),
        ("{name: flag, type: boolean, categories: [a, b]}", "flag", "only applies to categorical"),
        ("{name: flag, type: boolean, nullable: maybe}", "flag", "'nullable' must be true"),
    ],
)
def test_schema_refuses_a_contradiction_naming_the_column(entry: str, column: str,
                                                          fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(_with_column(entry), source="study.yaml")
    message = str(info.value)
    assert f"Schema study.yaml, line 5, column '{column}'" in message
    assert fragment in message


def test_schema_refuses_min_greater_than_max_naming_the_column() -> None:
    with pytest.raises(SchemaError, match=r"column 'age': min 90 is greater than max 0"):
        parse_schema(_with_column("{name: age, type: integer, min: 90, max: 0}"))


def test_schema_refuses_unquoted_yes_no_categories() -> None:
    # YAML 1.1 reads unquoted yes/no as booleans: the steward must quote them.
    with pytest.raises(SchemaError, match=r"column 'answer': category True .*quote it"):
        parse_schema(_with_column("{name: answer, type: categorical, categories: [yes, no]}"))
    quoted = parse_schema(_with_column(
        "{name: answer, type: categorical, categories: ['yes', 'no']}"))
    assert quoted.column("answer").categories == ("yes", "no")


def test_schema_accepts_whole_number_categories_as_text() -> None:
    schema = parse_schema(_with_column("{name: stage, type: categorical, categories: [1, 2, 3]}"))
    assert schema.column("stage").categories == ("1", "2", "3")


@pytest.mark.parametrize("bad", ["2000-13-01", "2021-02-30", "2021-01-01 25:00:00"])
def test_schema_refuses_an_impossible_unquoted_date_as_a_schema_error(bad: str) -> None:
    # PyYAML turns unquoted dates into date objects and raised a bare ValueError here.
    text = _with_column(f"{{name: born, type: date, min: {bad}, max: 2030-01-01}}")
    expected = rf"study.yaml, line 5, character 35: not valid YAML: '{bad}' is not a real date"
    with pytest.raises(SchemaError, match=expected):
        parse_schema(text, source="study.yaml")


def test_schema_refuses_invalid_yaml_naming_the_source_line_and_text() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema("name: x\ncolumns: [ {name: a, type: numeric", source="study.yaml")
    message = str(info.value)
    assert message.startswith("Schema study.yaml, line 2, character 35: not valid YAML: ")
    assert "the line reads 'columns: [ {name: a, type: numeric'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text",
    ["", "just text", "- a\n- b", "columns: {a: 1}", "name: x"],
)
def test_schema_refuses_a_document_without_a_columns_list(text: str) -> None:
    with pytest.raises(SchemaError, match="'columns' list"):
        parse_schema(text)


def test_schema_refuses_unknown_top_level_key() -> None:
    with pytest.raises(SchemaError, match="colums"):
        parse_schema("colums: []\ncolumns: [{name: a, type: boolean}]")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [("just-a-string", "entry #2"), ("{type: boolean}", "entry #2"),
     ("{name: '  ', type: boolean}", "the name is empty")],
)
def test_schema_refuses_a_column_entry_without_a_name(entry: str, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        parse_schema(_with_column(entry))


def test_schema_refuses_a_dictionary_with_only_identifiers() -> None:
    with pytest.raises(SchemaError, match="no column to model"):
        parse_schema("columns: [{name: pid, type: identifier}]")
    with pytest.raises(SchemaError, match="no column to model"):
        parse_schema("columns: []")


def test_schema_errors_are_fedsynth_errors() -> None:
    assert issubclass(SchemaError, FedsynthError)


REORDERED = """
# same contract: other key order, flow style, no descriptions, 250.0 for 250
columns:
- {type: identifier, name: patient_id}
- {max: 90, min: 0, type: integer, name: age, nullable: false}
- max: 250.0
  nullable: true
  min: 2.5
  type: numeric
  name: weight
- {categories: [classic, attenuated, 'yes'], type: categorical, name: subtype}
- {type: boolean, name: treated, description: Anything at all.}
- {name: diagnosed, type: date, min: '2000-01-01', max: 2025-12-31, nullable: true}
description: Different words.
name:     cohort
"""


def test_schema_hash_is_stable_across_key_order_whitespace_and_descriptions() -> None:
    assert parse_schema(REORDERED).sha256 == parse_schema(VALID).sha256
    assert parse_schema(VALID).sha256 == parse_schema(VALID, source="other.yaml").sha256
    assert len(parse_schema(VALID).sha256) == 64


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max: 90", "max: 91"),
        ("min: 2.5", "min: 2.0"),
        ("max: \"2025-12-31\"", "max: \"2025-12-30\""),
        ("[classic, attenuated, \"yes\"]", "[classic, attenuated, \"no\"]"),
        ("[classic, attenuated, \"yes\"]", "[attenuated, classic, \"yes\"]"),
        ("[classic, attenuated, \"yes\"]", "[classic, attenuated]"),
        ("    type: boolean\n", "    type: boolean\n    nullable: true\n"),
        ("    type: integer", "    type: numeric"),
        ("name: cohort", "name: cohort-2"),
        ("name: age", "name: age_years"),
    ],
)
def test_schema_hash_changes_when_the_contract_changes(old: str, new: str) -> None:
    assert old in VALID
    assert parse_schema(VALID.replace(old, new)).sha256 != parse_schema(VALID).sha256


def test_schema_hash_changes_when_columns_are_reordered() -> None:
    swapped = VALID.replace("- name: age\n", "- name: tmp\n").replace(
        "- name: treated\n", "- name: age\n").replace("- name: tmp\n", "- name: treated\n")
    assert parse_schema(swapped).sha256 != parse_schema(VALID).sha256


def test_load_schema_reads_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode("utf-8"))
    assert load_schema(path).sha256 == parse_schema(VALID).sha256


def test_load_schema_refuses_a_missing_file_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SchemaError, match="nowhere.yaml does not exist"):
        load_schema(missing)


def test_load_schema_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.replace("small", "sm\xe4ll").encode("latin-1"))
    with pytest.raises(SchemaError, match="latin1.yaml cannot be read as UTF-8"):
        load_schema(path)


def test_load_schema_names_the_file_in_contradictions(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_with_column("{name: weight, type: numeric, min: 10, max: 5}"))
    with pytest.raises(SchemaError, match=r"bad.yaml, line 5, column 'weight'"):
        load_schema(path)


def test_schema_hash_does_not_depend_on_the_file_name(tmp_path):
    text = "columns:\n  - {name: age, type: integer, min: 0, max: 90}\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    assert load_schema(tmp_path / "a.yaml").sha256 == load_schema(tmp_path / "b.yaml").sha256


def test_schema_refuses_category_with_a_line_break_naming_the_column():
    with pytest.raises(SchemaError, match="column 'kind'.*line break"):
        parse_schema('columns:\n  - {name: kind, type: categorical, categories: ["a\\rb"]}\n')


def test_schema_refuses_bounds_too_large_to_encode_naming_the_column():
    with pytest.raises(SchemaError, match="column 'x'.*too large"):
        parse_schema("columns:\n  - {name: x, type: numeric, min: -1.0e308, max: 1.0e308}\n")


def test_schema_reads_exponent_bounds_that_yaml_leaves_as_text():
    schema = parse_schema("columns:\n  - {name: x, type: numeric, min: 0, max: 1e5}\n")
    assert schema.column("x").high == 100000.0


def test_schema_errors_point_at_the_line_of_the_offending_key() -> None:
    text = VALID.replace("    max: 250\n", "    max: heavy\n")
    line = VALID.splitlines().index("    max: 250") + 1
    with pytest.raises(SchemaError, match=rf"Schema s.yaml, line {line}, column 'weight', max: "
                                          r"'heavy' is not a number"):
        parse_schema(text, source="s.yaml")


def test_schema_names_both_lines_of_a_duplicated_column() -> None:
    text = VALID + "  - name: age\n    type: boolean\n"
    second = len(VALID.splitlines()) + 1
    with pytest.raises(SchemaError, match=rf"line {second}, column 'age': the name is declared "
                                          r"twice \(first at line 7\)"):
        parse_schema(text, source="s.yaml")


def test_schema_refuses_a_key_given_twice_in_one_entry() -> None:
    with pytest.raises(SchemaError, match=r"line 2: key 'max' appears twice in one mapping"):
        parse_schema("columns:\n  - {name: a, type: integer, min: 0, max: 9, max: 90}\n")


@pytest.mark.parametrize(("written", "meant"), [("int", "integer"), ("Float", "numeric"),
                                                ("bool", "boolean"), ("string", "categorical"),
                                                ("Date", "date")])
def test_schema_suggests_the_type_a_common_spelling_means(written: str, meant: str) -> None:
    with pytest.raises(SchemaError, match=rf"type '{written}' .*\(did you mean '{meant}'\?\)"):
        parse_schema(_with_column(f"{{name: x, type: {written}}}"))


def test_schema_says_yaml_indents_with_spaces_when_a_tab_breaks_it() -> None:
    with pytest.raises(SchemaError, match=r"line 3, character 1: not valid YAML: .*the line "
                                          r"reads 'type: boolean'; YAML indents with spaces"):
        parse_schema("columns:\n  - name: a\n\ttype: boolean\n")


@pytest.mark.parametrize("low, high", [("2000-01-01", "2262-04-12"), ("1677-09-21", "2000-01-01")])
def test_schema_refuses_date_bounds_pandas_cannot_read_naming_the_column(low, high):
    """A record inside such bounds (2262-04-12) could not be parsed as a date: the
    schema, not the record, is at fault, so the schema says so."""
    with pytest.raises(SchemaError, match="column 'seen'.*outside the dates fedsynth can read"):
        parse_schema(f"columns:\n  - {{name: seen, type: date, min: '{low}', max: '{high}'}}\n")


def test_schema_accepts_the_last_date_pandas_can_read_and_records_on_it_validate():
    schema = parse_schema("columns:\n  - {name: seen, type: date, min: '2262-01-01', "
                          "max: '2262-04-11'}\n")
    validation = validate_records(pd.DataFrame({"seen": ["2262-04-11"]}), schema, source="t")
    assert validation.ok
