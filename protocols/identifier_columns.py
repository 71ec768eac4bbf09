"""Recognising columns that look like direct identifiers, and masking their values.

A hospital extract often carries more than the consortium asked for: the
patient's name, medical record number, social security number, date of birth,
e-mail address or phone number. Any undeclared column is refused anyway; this
module lets the refusal say *why* it matters, from the column's name or from
the shape of its values, so the data steward removes the column (or declares
it as an identifier so the node drops it) instead of renaming it to get past
the check.

Suspected identifier values are never repeated verbatim in a message (messages
end up in logs and tickets): `mask` keeps only their shape, so '123-45-6789'
reads as '999-99-9999'. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK_WIDTH = 40  # longer values are cut: the shape of the start is enough to recognise them

# Header spellings, compared after lower-casing and removing everything but letters and
# digits ("E-mail", "e_mail" and "Email" are one spelling); a leading "patient"/"pt" is
# ignored, so "patient_name" and "PtPhone" are caught too.
_KIND_BY_HEADER = {
    "a name": ("name", "names", "fullname", "firstname", "firstnames", "givenname",
               "forename", "forenames", "middlename", "lastname", "surname",
               "familyname", "maidenname"),
    "a medical record number": ("mrn", "medicalrecordnumber", "medicalrecordno",
                                "medicalrecord", "recordnumber", "hospitalnumber",
                                "patientnumber", "nhsnumber", "nhsno"),
    "a social security number": ("ssn", "socialsecurity", "socialsecuritynumber",
                                 "socialsecurityno", "nationalid", "nationalidnumber",
                                 "nationalinsurancenumber", "nino"),
    "a date of birth": ("dob", "dateofbirth", "birthdate", "birthday", "birthdt"),
    "an e-mail address": ("email", "emailaddress", "mail", "mailaddress"),
    "a phone number": ("phone", "phonenumber", "phoneno", "telephone", "telephonenumber",
                       "tel", "mobile", "mobilenumber", "mobilephone", "cellphone", "cell",
                       "fax"),
    "a postal address": ("address", "streetaddress", "homeaddress", "street"),
}
_HEADER_KINDS = {spelling: kind for kind, spellings in _KIND_BY_HEADER.items()
                 for spelling in spellings}
_PREFIXES = ("patient", "pt")

# Value shapes, tried in this order (a social security number also has a phone's shape).
_KIND_BY_VALUE = (
    ("an e-mail address", re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")),
    ("a social security number", re.compile(r"\d{3}-\d{2}-\d{4}")),
    # Only the characters a dialled number is written with; `_looks_dialled` does the rest.
    ("a phone number", re.compile(r"\+?[0-9 ().-]+")),
)
_PHONE_DIGITS = range(9, 16)
_LONGEST_IDENTIFIER = 254  # the longest e-mail address; a longer cell is free text


def identifier_kind_of_header(name: str) -> str | None:
    """What kind of direct identifier a column name suggests ('a date of birth'), or None."""
    compact = re.sub(r"[^0-9a-z]", "", name.lower())
    for prefix in _PREFIXES:
        rest = compact.removeprefix(prefix)
        if rest != compact and rest in _HEADER_KINDS:
            return _HEADER_KINDS[rest]
    return _HEADER_KINDS.get(compact)


def identifier_kind_of_value(value: str) -> str | None:
    """What kind of direct identifier one cell looks like ('an e-mail address'), or None."""
    text = value.strip()
    if len(text) > _LONGEST_IDENTIFIER:
        return None
    for kind, shape in _KIND_BY_VALUE:
        if shape.fullmatch(text):
            if kind == "a phone number" and not _looks_dialled(text):
                continue
            return kind
    return None


def _looks_dialled(text: str) -> bool:
    """9 to 15 digits after a '+', with an area code in brackets or in groups split by two
    separators. Not a phone number: an ISO date (8 digits), a signed or decimal number
    ('-10000000.0', '10 000 000.55'), a bare run of digits (as likely a lab code)."""
    digits = sum(ch.isdigit() for ch in text)
    if digits not in _PHONE_DIGITS or text[0] not in "+(0123456789" or text.count(".") == 1:
        return False
    separators = sum(ch in " .-" for ch in text)
    return text.startswith("+") or "(" in text or separators >= 2


def first_identifier_value(values: Iterable[str]) -> tuple[str, str] | None:
    """The kind and masked shape of the first value that looks like an identifier."""
    for value in values:
        kind = identifier_kind_of_value(value)
        if kind is not None:
            return kind, mask(value)
    return None


def mask(value: str) -> str:
    """The value's shape only: letters become 'x', digits (of any script) '9', and
    punctuation and spaces stay."""
    shape = "".join("x" if ch.isalpha() else "9" if ch.isalnum() else ch
                    for ch in value.strip()[:MASK_WIDTH])
    return shape + ("…" if len(value.strip()) > MASK_WIDTH else "")


def identifier_rule(kind: str, evidence: str) -> str:
    """The rule a steward reads when an undeclared column looks like a direct identifier."""
    return (f"looks like a direct identifier ({kind}, judging by {evidence}); identifiers "
            "must not reach the model: remove the column from the extract, or declare it "
            "in the schema as type identifier so the node drops it before reading anything")
