"""Checking a released cohort folder: the manifest's signature and every file it lists.

Both `fedsynth-node verify` and `fedsynth-coordinator verify` run
`verify_release`, so a hospital and the consortium reach the same verdict on
the same folder. Every problem is collected (not only the first), each naming
the file and what differs, so a data steward sees the whole picture at once.
A node asked to evaluate a cohort runs `verify_study_cohort` on the bytes it
was sent: it scores only the cohort that the consortium's key signed as the
release of the study its own ledger knows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.errors import FedsynthError
from protocols.release.manifest import CSV_NAME, MANIFEST_NAME, file_sha256, render_manifest
from protocols.release.signing import (SignatureError, check_signature, key_fingerprint,
                                       parse_public_key)

# Top-level files with these suffixes look like cohort data: unlisted, they are a problem.
DATA_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".pq", ".feather", ".arrow", ".xlsx"})
_PREFIX = 12  # hex digits of a sha256 shown to a person


@dataclass(frozen=True)
class Problem:
    """One thing that does not match, about one file."""

    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


@dataclass(frozen=True)
class ReleaseCheck:
    """The verdict on one release folder."""

    directory: Path
    problems: tuple[Problem, ...]
    files: tuple[str, ...]          # the cohort files the manifest lists
    fingerprint: str | None         # of the key that signed the manifest, when it verifies
    pinned: bool                    # a trusted key was given (and checked against the signer)
    uncovered: tuple[str, ...]      # other top-level files, which the signature does not cover

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_status(self) -> int:
        """0: everything matches a trusted key; 1: something does not match; 3: everything
        matches, but the signer was not pinned, so a release re-signed by anyone would pass
        too (a script that reads only the exit status must not take that for 0)."""
        return 1 if self.problems else 0 if self.pinned else 3

    def summary(self) -> str:
        """What a successful check prints: the count, the key, and what it proves."""
        trust = "trusted" if self.pinned else "not pinned"
        lines = [f"verified: {len(self.files)} files, signed by key {self.fingerprint} ({trust})"]
        if not self.pinned:
            lines.append("The signature proves these files are unchanged since the holder of "
                         "this key signed them, not who that is: compare the fingerprint with "
                         "the consortium's published manifest-signing key, or pass "
                         "--public-key (a site: --kit) to check it.")
        if self.uncovered:
            lines.append("Not covered by the signature: " + ", ".join(self.uncovered) + ".")
        return "\n".join(lines)

    def problem_report(self) -> str:
        """What a failed check prints: one line per problem."""
        count = f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}"
        return "\n".join([f"{self.directory} does NOT verify ({count}):",
                          *(f"  {problem}" for problem in self.problems)])


def load_trusted_key(path: Path) -> Ed25519PublicKey:
    """The consortium's manifest-signing public key from a PEM file (a kit's
    `manifest-signing.pub`); `FedsynthError` naming the file otherwise."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise FedsynthError(f"Cannot read the public key {path}: {exc.strerror}.") from None
    return parse_public_key(pem, str(path))


def verify_release(directory: Path, trusted_key: Ed25519PublicKey | None = None
                   ) -> ReleaseCheck:
    """Check `directory/manifest.json` (signature, signer, layout) and the files it lists."""
    if not directory.is_dir():
        raise FedsynthError(f"{directory} is not a folder: give the folder that holds the "
                            f"cohort and its {MANIFEST_NAME}.")
    problems: list[Problem] = []
    manifest = _read_manifest(directory / MANIFEST_NAME, problems)
    fingerprint = None
    listed: dict[str, Any] = {}
    if manifest is not None:
        fingerprint = _check_signer(manifest, trusted_key, problems)
        listed = _listed_files(manifest, problems)
        problems += [problem for name, entry in listed.items()
                     for problem in _check_file(directory, name, entry)]
    unlisted = [p.name for p in sorted(directory.iterdir())
                if p.is_file() and p.name != MANIFEST_NAME and p.name not in listed]
    if manifest is not None:  # without a manifest, every file would be "unlisted"
        problems += [Problem(name, "a data file in the release folder that the manifest does "
                             "not list (added after release?)")
                     for name in unlisted if Path(name).suffix.lower() in DATA_SUFFIXES]
    uncovered = tuple(n for n in unlisted if Path(n).suffix.lower() not in DATA_SUFFIXES)
    return ReleaseCheck(directory, tuple(problems), tuple(listed), fingerprint,
                        trusted_key is not None, uncovered)


def verify_study_cohort(manifest_bytes: bytes, cohort_csv: bytes,
                        trusted_key: Ed25519PublicKey, study: str) -> dict[str, Any]:
    """The manifest, when it is laid out as fedsynth writes it, signed by `trusted_key`,
    the release of `study`, and lists `cohort_csv` (sha256 and size) as its CSV cohort;
    `FedsynthError` naming every problem otherwise."""
    problems: list[Problem] = []
    manifest = None
    try:
        manifest = _parse_manifest(manifest_bytes.decode("utf-8"), problems)
    except UnicodeDecodeError as exc:
        problems.append(Problem(MANIFEST_NAME, f"unreadable: {exc}"))
    if manifest is not None:
        _check_signer(manifest, trusted_key, problems)
        if manifest.get("study") != study or manifest.get("synthetic") is not True:
            problems.append(Problem(MANIFEST_NAME, "not the release of this study"))
        entry = _listed_files(manifest, problems).get(CSV_NAME)
        digest = hashlib.sha256(cohort_csv).hexdigest()
        if not (isinstance(entry, Mapping) and entry.get("sha256") == digest
                and entry.get("bytes") == len(cohort_csv)):
            problems.append(Problem(CSV_NAME, "the cohort sent is not the one the manifest "
                                    "lists"))
    if problems:
        raise FedsynthError("The cohort to evaluate is not this study's signed release: "
                            + "; ".join(str(p) for p in problems) + ".")
    return manifest


def _read_manifest(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    """The manifest file, parsed by `_parse_manifest`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(MANIFEST_NAME, "missing: this is not a fedsynth release folder, "
                                "or its manifest was removed"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(MANIFEST_NAME, f"unreadable: {exc}"))
        return None
    return _parse_manifest(text, problems)


def _parse_manifest(text: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The manifest, refusing duplicate keys (two readers could see two values) and any
    byte that differs from how fedsynth writes it (the signature covers the content)."""
    try:
        manifest = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        problems.append(Problem(MANIFEST_NAME, f"unreadable: {exc}"))
        return None
    if not isinstance(manifest, dict):
        problems.append(Problem(MANIFEST_NAME, "unreadable: not a JSON object"))
        return None
    try:
        rendered = render_manifest(manifest)
    except ValueError:
        rendered = None
    if rendered != text:
        problems.append(Problem(MANIFEST_NAME, "its bytes are not laid out as fedsynth writes "
                                "them (edited after release?)"))
    return manifest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise ValueError(f"the key {duplicated[0]!r} appears twice in one object")
    return dict(pairs)


def _check_signer(manifest: Mapping[str, Any], trusted_key: Ed25519PublicKey | None,
                  problems: list[Problem]) -> str | None:
    try:
        signer = check_signature(manifest)
    except SignatureError as exc:
        problems.append(Problem(MANIFEST_NAME, str(exc)))
        return None
    fingerprint = key_fingerprint(signer)
    if trusted_key is not None and key_fingerprint(trusted_key) != fingerprint:
        problems.append(Problem(MANIFEST_NAME, f"signed by key {fingerprint}, not by the trusted "
                                f"key {key_fingerprint(trusted_key)}"))
    return fingerprint


def _listed_files(manifest: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """The manifest's `files`, keeping only plain file names (never a path out of the folder)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        problems.append(Problem(MANIFEST_NAME, "lists no cohort files"))
        return {}
    listed = {}
    for name, entry in files.items():
        if name in ("", ".", "..", MANIFEST_NAME) or "/" in name or "\\" in name:
            problems.append(Problem(MANIFEST_NAME, f"lists {name!r}, which is not a file name "
                                    "in this folder"))
        else:
            listed[name] = entry
    return listed


def _check_file(directory: Path, name: str, entry: Any) -> list[Problem]:
    path = directory / name
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
            or not isinstance(entry.get("bytes"), int):
        return [Problem(name, "its manifest entry has no sha256 and size")]
    if not path.is_file():
        return [Problem(name, "listed in the manifest but missing")]
    size, digest = path.stat().st_size, file_sha256(path)
    differences = []
    if digest != entry["sha256"]:
        differences.append(f"sha256 differs (manifest {entry['sha256'][:_PREFIX]}…, "
                           f"file {digest[:_PREFIX]}…)")
    if size != entry["bytes"]:
        differences.append(f"size differs (manifest {entry['bytes']} bytes, file {size} bytes)")
    return [Problem(name, "; ".join(differences))] if differences else []
