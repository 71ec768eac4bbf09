"""Run `fedsynth-node` or `fedsynth-coordinator` as a separate process, as an operator does.

The command is the entry point's own `main` (pyproject's `[project.scripts]`) started by this
Python, from this checkout, so the test runs the code under test even where the installed
console script points elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"fedsynth-node": "node.cli", "fedsynth-coordinator": "simulation.cli"}


def run_cli(command: str, *args: str | Path, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    """`command args...` in a new process; its exit status, stdout and stderr."""
    code = f"import sys; from {ENTRY_POINTS[command]} import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_paragraph_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The error a user sees: exit 2, one line on stderr, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"{command}: error:"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return result.stderr
