"""Revoking a site: its key leaves the enrolled set, for good, and the revocation is recorded.

The coordinator kit's `enrolled/` folder is the consortium's set of accepted node keys: the
keys registered with the SuperLink come from it. `revoke` moves the site's key from
`enrolled/SITE.pub` to `revoked/SITE.<time>.pub` (`provision` refuses a revoked key ever
after), appends one JSON line to `revocations.jsonl` (site, fingerprint, key, time, which
SuperLink nodes were unregistered) and rewrites the summaries without the site. With a
Control API address it first unregisters the key at the running SuperLink
(`coordinator.provisioning.superlink_enrolment`), which is what makes the SuperLink refuse
the node; a site already revoked in the files may be revoked again there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from coordinator.provisioning.consortium import (ENROLLED, REVOKED, coordinator_docs,
                                                 read_consortium)
from coordinator.provisioning.kit_staging import replace_file
from coordinator.provisioning.superlink_enrolment import unregister_key
from protocols import kit_layout as kit
from protocols.kit_layout import PRIVATE_DIR, PUBLIC_FILE, KitError, SuperLinkAddress, \
    check_site_name
from protocols.node_keys import NodeAuthPublicKey, read_public_key_file

REVOCATIONS = "revocations.jsonl"


@dataclass(frozen=True)
class Revocation:
    """What `revoke` did, for the CLI to report."""

    site: str
    key: NodeAuthPublicKey
    revoked_at: dt.datetime
    already_revoked: bool  # the files were done earlier; only the SuperLink was asked now
    unregistered_nodes: tuple[int, ...] | None  # None: the SuperLink was not asked
    record: Path


def revoke(out: Path, site: str, control: SuperLinkAddress | None = None,
           now: dt.datetime | None = None) -> Revocation:
    """Revoke `site` in the kits folder `out` (and at the SuperLink `control`, if given)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    coordinator_dir = out / kit.COORDINATOR_KIT
    consortium = read_consortium(coordinator_dir)
    site = check_site_name(site)
    enrolled = coordinator_dir / ENROLLED / f"{site}.pub"
    record = coordinator_dir / REVOCATIONS
    key = _key_to_revoke(coordinator_dir, site, record, asks_superlink=control is not None)
    nodes = unregister_key(control, consortium.ca_pem, key) if control else None
    if not enrolled.is_file():
        return Revocation(site, key, now, True, nodes, record)
    entry = {"site": site, "fingerprint": key.fingerprint, "public_key": key.line.decode(),
             "revoked_at": _utc(now),
             "superlink_nodes_unregistered": None if nodes is None else list(nodes)}
    _record(enrolled, coordinator_dir / REVOKED / f"{site}.{_stamp(now)}.pub", record, entry)
    remaining = replace(consortium, sites=tuple(s for s in consortium.sites if s != site))
    for name, file in coordinator_docs(remaining, coordinator_dir, None).items():
        replace_file(coordinator_dir / name, file)
    return Revocation(site, key, now, False, nodes, record)


def _key_to_revoke(coordinator_dir: Path, site: str, record: Path, asks_superlink: bool
                   ) -> NodeAuthPublicKey:
    """The site's enrolled key or, when only the SuperLink is left to ask, its revoked one."""
    enrolled = coordinator_dir / ENROLLED / f"{site}.pub"
    if enrolled.is_file():
        return read_public_key_file(enrolled)
    earlier = _last_revocation(record, site)
    if earlier is not None and asks_superlink:
        return NodeAuthPublicKey(earlier["public_key"].encode())
    if earlier is not None:
        raise KitError(f"Site {site!r} was already revoked on {earlier['revoked_at']} "
                       f"({record}). To make sure the running SuperLink refuses it too, run "
                       "this again with --control HOST:PORT (its loopback address).")
    enrolled_sites = sorted(p.stem for p in (coordinator_dir / ENROLLED).glob("*.pub"))
    raise KitError(f"Site {site!r} is not enrolled in {coordinator_dir} (no {enrolled}); the "
                   f"enrolled sites are: {', '.join(enrolled_sites) or 'none'}. Nothing was "
                   "changed.")


def _record(enrolled: Path, revoked: Path, record: Path, entry: dict) -> None:
    """Move the key out of the enrolled set and record it: both, or neither."""
    try:
        _move_to_revoked(enrolled, revoked)
        try:
            _append(record, entry)
        except BaseException:
            os.rename(revoked, enrolled)  # unrecorded, so not revoked in the files
            raise
    except OSError as exc:
        raise KitError(f"Cannot write {exc.filename} ({exc.strerror}); site "
                       f"{entry['site']!r} is still enrolled in the coordinator kit; fix that "
                       "and run revoke again.") from None


def _last_revocation(record: Path, site: str) -> dict | None:
    if not record.is_file():
        return None
    found = None
    for number, line in enumerate(record.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise KitError(f"{record}, line {number}, is not JSON; the revocation record is "
                           "written by `fedsynth-coordinator revoke` only. Restore it from "
                           "your backup.") from None
        if entry.get("site") == site:
            found = entry
    return found


def _move_to_revoked(enrolled: Path, target: Path) -> None:
    target.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    if target.exists():
        raise KitError(f"{target} already exists; nothing was changed.")
    os.rename(enrolled, target)


def _append(record: Path, entry: dict) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PUBLIC_FILE)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
