"""Tests for recognising direct identifiers by column name or value shape, and masking them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.identifier_columns import (first_identifier_value, identifier_kind_of_header,
                                          identifier_kind_of_value, mask)


@pytest.mark.parametrize(
    ("header", "kind"),
    [("patient_name", "a name"), ("Surname", "a name"), ("First Name", "a name"),
     ("MRN", "a medical record number"), ("medical_record_number", "a medical record number"),
     ("SSN", "a social security number"), ("social-security", "a social security number"),
     ("DOB", "a date of birth"), ("date_of_birth", "a date of birth"),
     ("BirthDate", "a date of birth"), ("e-mail", "an e-mail address"),
     ("Email Address", "an e-mail address"), ("telephone", "a phone number"),
     ("PtPhone", "a phone number"), ("mobile", "a phone number")],
)
def test_identifier_headers_are_recognised_in_any_spelling(header: str, kind: str) -> None:
    assert identifier_kind_of_header(header) == kind


@pytest.mark.parametrize("header", ["age", "ward", "contact", "drug_name", "gene", "notes",
                                    "diagnosis_date", "treated", "site"])
def test_ordinary_clinical_headers_are_not_taken_for_identifiers(header: str) -> None:
    assert identifier_kind_of_header(header) is None


@pytest.mark.parametrize(
    ("value", "kind"),
    [("jane.doe@example.org", "an e-mail address"), (" a@b.co ", "an e-mail address"),
     ("123-45-6789", "a social security number"), ("+44 20 7946 0958", "a phone number"),
     ("(555) 010-4477", "a phone number"), ("020 7946 0958", "a phone number")],
)
def test_identifier_values_are_recognised_by_shape(value: str, kind: str) -> None:
    assert identifier_kind_of_value(value) == kind


@pytest.mark.parametrize("value", ["71.5", "-10000000.0", "10 000 000.55", "2012-03-04",
                                   "1234567890", "1e10", "classic", "", "+1", "12-34"])
def test_clinical_values_are_not_taken_for_identifiers(value: str) -> None:
    assert identifier_kind_of_value(value) is None


def test_mask_keeps_the_shape_and_nothing_else() -> None:
    assert mask("123-45-6789") == "999-99-9999"
    assert mask(" Jane.Doe@example.org ") == "xxxx.xxx@xxxxxxx.xxx"
    assert mask("x" * 50) == "x" * 40 + "…"


def test_first_identifier_value_gives_the_kind_and_a_masked_example() -> None:
    assert first_identifier_value(["", "ok", "j@x.org", "123-45-6789"]) == (
        "an e-mail address", "x@x.xxx")
    assert first_identifier_value(["1", "2"]) is None


@given(st.text(max_size=300))
def test_recognising_and_masking_any_text_never_fails_nor_leaks_a_digit_or_letter(
        text: str) -> None:
    identifier_kind_of_value(text)
    identifier_kind_of_header(text)
    assert not any(ch.isalnum() and ch not in "x9" for ch in mask(text))
