"""The app bundle (FAB) that every study ships holds the app's sources and nothing else.

`flwr run` packs the project folder with `flwr build`. An operator's project folder is
also where `provision --out kits/` and `keygen` write keys, where studies' outputs and
ledgers land and where a venv lives; none of it may travel to the SuperLink and every
hospital. The real `flwr build` is run on a copy of the project with such files
planted in it, and the resulting zip is read.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from federation import tool

REPO = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("protocols", "node", "coordinator")  # what the ServerApp and ClientApp import
FAB_BOOKKEEPING = {"pyproject.toml", ".info/CONTENT"}  # Flower's own entries
# Files an operator's project folder may hold, none of which may be packed; the kinds
# Flower would otherwise pack (.toml, .md, .json, .jsonl, .yaml, .py) are among them.
PLANTED = {
    "kits/coordinator/ca.key": "-----BEGIN PRIVATE KEY-----\nfake\n",
    "kits/coordinator/manifest-signing.key": "-----BEGIN PRIVATE KEY-----\nfake\n",
    "kits/coordinator/consortium.toml": "[consortium]\n",
    "kits/coordinator/revocations.jsonl": "{}\n",
    "kits/siteA/node-auth.key": "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n",
    "kits/siteA/node.toml": "[node]\n",
    "kits/siteA/schema.yaml": "columns: []\n",
    "kits/siteA/README.md": "# siteA\n",
    "kits/siteA/state/privacy-ledger.jsonl": "{}\n",
    "superlink.pem": "-----BEGIN CERTIFICATE-----\nfake\n",
    "study-001/manifest.json": "{}\n",
    "study-001/report.json": "{}\n",
    "study-001/checkpoints/round-0001.json": "{}\n",
    "fedsynth-out/manifest.json": "{}\n",
    "records/siteA.csv": "patient_id\n1\n",
    "node/leftover.pem": "-----BEGIN CERTIFICATE-----\nfake\n",
    ".venv/lib/python3.11/site-packages/module.py": "x = 1\n",
    "venv/lib/python3.11/site-packages/module.py": "x = 1\n",
    ".git/config": "[core]\n",
    ".git/hooks/hook.py": "x = 1\n",
    ".pytest_cache/README.md": "# cache\n",
}


def _project_copy(root: Path) -> Path:
    """The committed project (as a checkout has it), with the planted files."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree is not copied
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / name)
    for name, text in PLANTED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _build(project: Path, workdir: Path) -> Path:
    workdir.mkdir()
    result = subprocess.run([tool("flwr"), "build", "--app", str(project)], cwd=workdir,
                            capture_output=True, text=True, timeout=120,
                            env={"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                                 "PATH": str(Path(tool("flwr")).parent), "HOME": str(workdir)})
    assert result.returncode == 0, result.stdout + result.stderr
    [fab] = workdir.glob("*.fab")
    return fab


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundle")
    project = _project_copy(root / "project")
    return project, _build(project, root / "out")


def test_no_kit_key_output_venv_or_git_file_is_packed(built):
    _, fab = built
    names = set(zipfile.ZipFile(fab).namelist())
    assert not names & set(PLANTED)
    for name in names - FAB_BOOKKEEPING:
        assert name.split("/")[0] in APP_PACKAGES and name.endswith(".py"), name
    assert not any(Path(n).suffix in {".key", ".pem", ".csv"} for n in names)


def test_the_bundle_holds_every_source_of_the_app_packages(built):
    project, fab = built
    names = set(zipfile.ZipFile(fab).namelist()) - FAB_BOOKKEEPING
    sources = {p.relative_to(project).as_posix() for package in APP_PACKAGES
               for p in (project / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert names == sources


def test_the_bundle_is_the_same_bytes_when_built_again_elsewhere(built, tmp_path):
    """Reproducible: a hospital can rebuild the release's bundle and compare its hash."""
    _, fab = built
    again = _build(_project_copy(tmp_path / "project"), tmp_path / "out")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(
        fab.read_bytes()).digest()
