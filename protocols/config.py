"""Reading settings: one parser per kind of value, wherever the value comes from.

Settings reach fedsynth from four places: the study plan (in every message, and
`[tool.flwr.app.config]`), the coordinator's run config, a SuperNode's
`--node-config` and a site kit's `node.toml`. Each arrives as a TOML value or as
text, depending on who wrote it. Every kind of value is read here, once, by the
same rule everywhere: a flag is `true` or `false` (a TOML boolean, that text in
any case, or 1 / 0); `"no"` or `"yes"` are refused, never read as true in one
place and as an error in another. Each refusal names where the value came from
(`what`) and is raised as the caller's error type, so a plan's bad value is a
`PlanError` and a kit's a `KitError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from protocols.errors import FedsynthError

ErrorType = type[FedsynthError]


def read_flag(value: Any, what: str, error: ErrorType = FedsynthError) -> bool:
    """`true` or `false`: a boolean, that text in any case, or 1 / 0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "false", "1", "0"):
        return text in ("true", "1")
    raise error(f"{what} = {value!r} is not true or false.")


def read_whole_number(value: Any, what: str, error: ErrorType = FedsynthError,
                      rule: str = "a valid int") -> int:
    """A whole number: an integer, a float with no fraction, or such text (`rule`: what
    a refusal says it must be)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)  # exact, however large
        except ValueError:
            try:
                value = float(text) if text else value
            except ValueError:
                pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise error(f"{what} = {value!r} is not {rule}.")


def read_number(value: Any, what: str, error: ErrorType = FedsynthError) -> float:
    """A number (`inf` included): an integer, a float, or such text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise error(f"{what} = {value!r} is not a valid float.")


def read_positive(value: Any, what: str, error: ErrorType = FedsynthError,
                  below: float = math.inf, at_most: float = math.inf,
                  infinite: bool = False) -> float:
    """A number above 0, below `below` and at most `at_most`; finite unless `infinite`
    (then `inf` means "no limit")."""
    number = read_number(value, what, error)
    if not (0 < number < below and number <= at_most or (infinite and number == math.inf)):
        bound = ("" if math.isinf(below) else f" and below {below:g}") + (
            "" if math.isinf(at_most) else f" and at most {at_most:g}")
        kind = "a number (or inf)" if infinite else "a finite number"
        raise error(f"{what} = {value!r} must be {kind} above 0{bound}.")
    return number


def read_text(value: Any) -> str | None:
    """Text with surrounding blanks removed; None for a missing or empty value."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_path(value: Any) -> Path | None:
    """A path (`~` expanded); None for a missing or empty value."""
    text = read_text(value)
    return Path(text).expanduser() if text else None
