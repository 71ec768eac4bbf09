"""Running a fedsynth command as a separate process with the network cut off and every
package installer trapped, then finding what it left running.

`offline_prefix()` runs a command in a new network namespace that has only loopback
(root: `unshare --net`; otherwise an unprivileged user namespace too) and skips the test,
saying why, where one cannot be made. `Scratch` holds the process's HOME, caches and
temp folder, and puts traps first on its Python path: a `python -m uv` or `python -m
pip` (how Flower installs an app's dependencies) writes a mark there and fails, so a
test sees whether one ever ran. Every process the command starts inherits the scratch's
TMPDIR, which is how `Scratch.processes()` finds the ones still running afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cli_process import ENTRY_POINTS, REPO

INSTALLERS = ("uv", "pip")
# No route leaves the namespace: a UDP "connect" needs a route but sends nothing.
_NO_ROUTE = ("import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
             ".connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n"
             "else:\n    raise SystemExit('a route leaves this namespace')\n")


def offline_prefix() -> list[str]:
    """The command prefix that runs a command with only loopback up."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs util-linux `unshare` and iproute2 `ip` to cut the network off")
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else \
        ["unshare", "--user", "--map-root-user", "--net"]
    prefix = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "offline"]
    probe = subprocess.run([*prefix, sys.executable, "-c", _NO_ROUTE],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace with only loopback here: "
                    f"{(probe.stderr or probe.stdout).strip()[-300:]}")
    return prefix


class Scratch:
    """A short folder (Ray's socket paths must stay under 108 bytes) for one command's
    HOME, caches, temp files and installer traps."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="fs-off-", dir="/tmp"))
        for name in ("home", "tmp", "trapped"):
            (self.path / name).mkdir()
        for installer in INSTALLERS:  # a regular package: a namespace one loses to the real one
            package = self.path / "traps" / installer
            package.mkdir(parents=True)
            (package / "__init__.py").write_text("")
            (package / "__main__.py").write_text(
                f"import pathlib, sys\npathlib.Path({str(self.path / 'trapped' / installer)!r})"
                ".write_text(' '.join(sys.argv))\nsys.exit(1)\n")

    def command(self, entry_point: str, *args: str, prefix: list[str] | None = None
                ) -> list[str]:
        code = f"import sys; from {ENTRY_POINTS[entry_point]} import main; sys.exit(main())"
        return [*(prefix or []), sys.executable, "-c", code, *args]

    def environment(self) -> dict[str, str]:
        python_path = [str(self.path / "traps"), str(REPO), os.environ.get("PYTHONPATH", "")]
        home = self.path / "home"
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, python_path)),
                "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                "UV_CACHE_DIR": str(self.path / "uv-cache"), "TMPDIR": str(self.path / "tmp")}

    def run(self, *command: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(command), env=self.environment(), cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def installers_started(self) -> list[str]:
        """What each trapped installer was asked to do, and the caches one would leave."""
        marks = [p.read_text() for p in sorted((self.path / "trapped").iterdir())]
        caches = [self.path / "uv-cache",
                  *(self.path / "home" / ".cache" / name for name in INSTALLERS)]
        return marks + [str(c) for c in caches if c.exists()]

    def processes(self) -> list[int]:
        """Live processes whose environment has this scratch's TMPDIR."""
        marker = f"\0TMPDIR={self.path / 'tmp'}\0".encode()
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                environ = b"\0" + (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ and int(entry.name) != os.getpid() and alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def remove(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.path, ignore_errors=True)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
