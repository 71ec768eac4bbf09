"""Confining the node's app process with Landlock, so that it cannot read the node's keys.

The node's ClientApp process (`node.app_executor`) handles what the coordinator sends; it
runs as the same user as the SuperNode, which must read the site's node-auth key. Linux's
Landlock (an unprivileged sandbox, kernel 5.13 and later; ABI versions in
Documentation/userspace-api/landlock.rst) lets a process give up rights for itself and
every process it starts, irrevocably. Before any message is read, the app process:

- **may not read** the node-auth private key or the SuperExec secret (the files in
  `denied`). Landlock grants rights by file hierarchy and cannot carve one file out of a
  granted folder, so reading is granted on every sibling along each denied file's path
  (for `/etc/fedsynth/kit/node-auth.key`: every entry of `/` but `etc`, of `/etc` but
  `fedsynth`, of `/etc/fedsynth` but `kit`, and every file of the kit but the key),
  computed afresh for each app process. Symbolic links along the way are not followed
  (Landlock would grant their target's hierarchy): read a file through its real path;
- **may connect** over TCP only to the SuperNode's runtime port, and bind none, so the
  app reaches the SuperLink only through its SuperNode: where the kernel offers Landlock
  ABI 4 or later (Linux 6.7+). On an older kernel the node's network is confined by its
  unit or container only (deploy/), and `start` says so;
- **may not signal or ptrace** a process outside its sandbox (Landlock's ptrace rule; the
  signal and abstract-socket scopes from ABI 6): it cannot read the SuperNode's memory,
  where the key also lives, through `/proc`. Landlock lets a process holding
  CAP_SYS_PTRACE past that rule, so the app process first drops every capability it has
  (a node started as root keeps none in its app).

Every other right stays: the app writes the ledger and its head as before. Landlock only
takes rights away, so what it does not cover (UDP, for one) stays as the process had it.
Folders are granted whole, so files created in them later are readable too; in the key's
own folder each file is granted by itself, so a file created there later is not (the
node keeps nothing it rewrites there: its ledger head has a folder of its own,
`protocols.kit_layout.DEFAULT_LEDGER_HEAD`). A process confines itself before it starts
any thread: Landlock binds the calling thread and the threads it starts afterwards.
"""

from __future__ import annotations

import ctypes
import os
import platform
import stat
from collections.abc import Iterable
from pathlib import Path

from protocols.errors import FedsynthError

# <linux/landlock.h>; the system call numbers are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_ACCESS_FS_READ_FILE = 1 << 2
_ACCESS_NET_BIND_TCP, _ACCESS_NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_CAP_LAST = 63  # above the kernel's last capability, dropping is refused: stop there
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(platform.machine())
_CAPABILITY_VERSION_3 = 0x20080522
# The ABI that confines TCP connections (4); files need 1, which the node requires.
FILES_ABI = 1
NETWORK_ABI = 4
SCOPE_ABI = 6


class SandboxError(FedsynthError):
    """The app process could not be confined."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (not Linux, a kernel
    without it, or a container runtime that filters the system call)."""
    if platform.system() != "Linux":
        return 0
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def unavailable_reason() -> str | None:
    """Why the app process cannot be kept from the node's key here; None when it can."""
    if landlock_abi() >= FILES_ABI:
        return None
    return (f"this kernel (Linux {platform.release()}) offers no Landlock, which the node "
            "needs to keep its app process from reading the node-auth key: use Linux 5.13 "
            "or later with Landlock enabled (the lsm= boot list holds `landlock`), and in a "
            "container a runtime whose seccomp profile lets the landlock_* system calls "
            "through (Docker's default does, since moby/moby#43199)")


def confines_network() -> bool:
    """Whether the app process's TCP connections are confined too (Landlock ABI 4+)."""
    return landlock_abi() >= NETWORK_ABI


def readable_siblings(denied: Iterable[Path]) -> list[Path]:
    """Every path along the denied files' real paths that is not on the way to one of them:
    granting reading beneath each of these grants it everywhere but the denied files."""
    targets = {Path(os.path.realpath(path)) for path in denied}
    on_the_way = {parent for target in targets for parent in target.parents} | targets
    granted: list[Path] = []
    for folder in sorted(parent for target in targets for parent in target.parents):
        if folder in granted:
            continue
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry in on_the_way or entry in granted:
                continue
            try:
                if stat.S_ISLNK(os.lstat(entry).st_mode):
                    continue
            except OSError:
                continue
            granted.append(entry)
    return granted


def confine(denied: Iterable[Path], connect_port: int) -> None:
    """Confine this process (and all it starts, for good) as the module says. Raises
    `SandboxError` when the kernel cannot."""
    reason = unavailable_reason()
    if reason:
        raise SandboxError(f"The node's app process cannot be sandboxed: {reason}.")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        # Landlock and capabilities bind the calling thread and those it starts later only.
        raise SandboxError(f"The node's app process must confine itself before any thread "
                           f"starts; it already runs {threads}.")
    abi = landlock_abi()
    network = abi >= NETWORK_ABI
    attr = _RulesetAttr(handled_access_fs=_ACCESS_FS_READ_FILE,
                        handled_access_net=(_ACCESS_NET_BIND_TCP | _ACCESS_NET_CONNECT_TCP
                                            if network else 0),
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
                                if abi >= SCOPE_ABI else 0))
    size = (ctypes.sizeof(attr) if abi >= SCOPE_ABI else
            _RulesetAttr.scoped.offset if network else _RulesetAttr.handled_access_net.offset)
    ruleset = _call(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                    ctypes.c_uint32(0), what="create a Landlock ruleset")
    try:
        for path in readable_siblings(denied):
            _grant_reading(ruleset, path)
        if network:
            port = _NetPortAttr(allowed_access=_ACCESS_NET_CONNECT_TCP, port=connect_port)
            _call(_SYS_ADD_RULE, ruleset, ctypes.c_int(_RULE_NET_PORT), ctypes.byref(port),
                  ctypes.c_uint32(0), what=f"allow connections to port {connect_port}")
        _drop_capabilities()
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxError("The node's app process could not set no_new_privs: "
                               f"{os.strerror(ctypes.get_errno())}.")
        _call(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0), what="enforce the ruleset")
    finally:
        os.close(ruleset)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Give up every capability, for good (bounding set, then effective and permitted)."""
    for capability in range(_CAP_LAST + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the kernel's last capability (or none held: nothing to drop)
    if _SYS_CAPSET is None:
        raise SandboxError(f"The node's app sandbox does not know {platform.machine()}'s "
                           "capset system call.")
    header = _CapHeader(version=_CAPABILITY_VERSION_3, pid=0)
    none = (_CapData * 2)()
    _call(_SYS_CAPSET, ctypes.byref(header), none, what="drop its capabilities")


def _grant_reading(ruleset: int, path: Path) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # gone since it was listed: nothing to grant
    try:
        rule = _PathBeneathAttr(allowed_access=_ACCESS_FS_READ_FILE, parent_fd=fd)
        _call(_SYS_ADD_RULE, ruleset, ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
              ctypes.c_uint32(0), what=f"allow reading {path}")
    finally:
        os.close(fd)


def _call(number: int, *args: object, what: str) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        raise SandboxError(f"The node's app process could not {what}: "
                           f"{os.strerror(ctypes.get_errno())}.")
    return int(result)
