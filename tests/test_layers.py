"""The house's layering, read from the code's own imports: the folder says who may touch
what (DESIGN.md), and no dependency hides in a string."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the fedsynth packages it may import
ALLOWED = {"protocols": {"protocols"},
           "node": {"protocols", "node"},
           "coordinator": {"protocols", "coordinator"},
           "simulation": {"protocols", "node", "coordinator", "simulation"}}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", list(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = {f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
             for path in (ROOT / package).rglob("*.py")
             if (bad := _imports(path) - ALLOWED[package])}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("package", list(ALLOWED))
def test_no_module_is_loaded_by_a_name_in_a_string(package):
    """An importlib string is a dependency the picture of the house does not show."""
    for path in (ROOT / package).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import_module(" not in text and "__import__(" not in text, path


def test_only_the_node_runs_a_familys_release_on_records():
    """A family's `release` (DP-SGD steps, noisy tables) runs on a site's records: the
    coordinator, which must never hold them, never calls it."""
    for path in (ROOT / "coordinator").rglob("*.py"):
        calls = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                 and node.func.attr == "release"]
        assert not calls, f"{path.relative_to(ROOT)}:{calls[0].lineno}"
