"""The release's app bundle: the one Flower app (FAB) a study may ship, and its sha256.

Flower ships a study's code as a FAB, a zip that `flwr build` / `flwr run` packs from a
project folder (`pyproject.toml` and what its `fab-include` lets in: the `.py` sources of
`protocols/`, `node/` and `coordinator/`). Flower writes every zip entry with a fixed
date, so the same files always make the same bytes, and the bundle's sha256 names a
release's code exactly.

This module rebuilds that bundle from the *installed* fedsynth, no source checkout needed:
it lays the installed packages' sources out as a project folder beside the project's
`pyproject.toml` (shipped in the package as `flower_app.toml`, a link to the one file, so
the two cannot drift) and lets Flower's own builder pack it. The coordinator runs a study
from that folder and pins its hash in every site kit (`[app] sha256` of node.toml); a
node refuses any bundle whose hash is not its pin before a byte of the bundle's code runs
(`node.app_executor`), and runs its own installed ClientApp instead of the bundle's. A
source checkout with the same files builds the same hash (tests/deploy/test_app_pinning.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

# The packages whose sources the bundle carries: the app's two components and what they share.
APP_PACKAGES = ("protocols", "node", "coordinator")
PROJECT_FILE = "pyproject.toml"
_SHIPPED_PROJECT_FILE = Path(__file__).with_name("flower_app.toml")
SHA256_HEX_LENGTH = 64


def sha256_hex(content: bytes) -> str:
    """The sha256 of a bundle's bytes, as node.toml's `[app] sha256` and Flower write it."""
    return hashlib.sha256(content).hexdigest()


def is_sha256_hex(text: str) -> bool:
    return len(text) == SHA256_HEX_LENGTH and all(c in "0123456789abcdef" for c in text)


def write_release_project(destination: Path) -> Path:
    """Lay the installed release out as a Flower project folder in `destination` (empty or
    new): `pyproject.toml` and every `.py` source of the app's packages. `flwr run
    destination CONNECTION` then ships exactly the release's bundle."""
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty; give a new or empty folder")
    shutil.copyfile(_SHIPPED_PROJECT_FILE, destination / PROJECT_FILE)
    for package in APP_PACKAGES:
        source = _package_folder(package)
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            target = destination / package / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return destination


@contextmanager
def release_project() -> Iterator[Path]:
    """The installed release as a project folder that lives for the `with` block."""
    with tempfile.TemporaryDirectory(prefix="fedsynth-app-") as folder:
        yield write_release_project(Path(folder) / "fedsynth")


def project_sha256(project: Path) -> str:
    """The sha256 of the bundle `flwr run project` ships (Flower's own builder)."""
    with warnings.catch_warnings():  # the builder's own deprecation noise, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        return sha256_hex(build_fab_from_disk(project))


@functools.cache
def release_sha256() -> str:
    """The sha256 of this installation's app bundle (computed once per process)."""
    with release_project() as project:
        return project_sha256(project)


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"fedsynth's package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))
