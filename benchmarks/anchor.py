"""The privacy–utility benchmark's anchor: central AIM on the pooled training rows.

Central AIM at the plan's ε and δ is what a trusted curator holding every site's records
could release; an independent, well-known implementation (smartnoise-synth's
`AIMSynthesizer`) computes it, not fedsynth's code. smartnoise-synth pins packages that
fedsynth's own environment cannot hold (opacus < 0.15, mbi < 2), so it is never a fedsynth
dependency: `anchor_environment` makes it a virtual environment of its own,
`benchmarks/.anchor-venv` (git-ignored), from the package registry on first use, with
only what AIM imports, and `central_aim` runs it in a subprocess (`central_aim.py`).

AIM's input is binned here with fedsynth's own fine bins (`protocols.count_tables`): a
function of the schema's declared bounds and categories alone, missing values a bin of
their own, so no preprocessing looks at the records. Its output codes are decoded the way
the marginals family decodes its own (`fine_to_encoded`: a value drawn inside its bin, the
category for a category, integers and dates whole), giving exactly the schema's columns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocols.count_tables import build_layout, fine_to_encoded
from protocols.plan import StudyPlan
from protocols.records import check_file
from protocols.schema import Schema

ANCHOR_VENV = Path(__file__).resolve().parent / ".anchor-venv"
SCRIPT = Path(__file__).resolve().parent / "central_aim.py"
# Installed without their own requirements, which pull opacus 0.14 (and a torch with it)
# and pac-synth, neither of which AIM imports.
WITHOUT_REQUIREMENTS = ("smartnoise-synth==1.0.8", "smartnoise-sql==1.0.10")
# What `snsynth.aim` imports, and the versions smartnoise-synth 1.0.8 asks for: mbi 1.1
# (the last before 2) on jax; OpenDP 0.14 for its noise; the rest for `snsynth` and
# `snsql` to import at all.
REQUIREMENTS = ("mbi==1.1.0", "jax==0.10.2", "jaxlib==0.10.2", "opendp==0.14.2",
                "pandas==2.3.3", "Faker>=17", "PyYAML>=6.0.1,<7", "SQLAlchemy>=2,<3",
                "antlr4-python3-runtime==4.9.3")
_MARKER = "fedsynth-anchor.json"


@dataclass(frozen=True)
class AnchorEnvironment:
    """The anchor's virtual environment: its interpreter, and what making it cost."""

    python: Path
    created_s: float
    size_bytes: int
    made_now: bool

    def describe(self) -> str:
        when = "made by this run" if self.made_now else "made by an earlier run"
        return (f"smartnoise-synth 1.0.8's AIMSynthesizer in its own virtual environment "
                f"({when}: {self.created_s:.0f} s to create, "
                f"{self.size_bytes / 2**20:.0f} MiB), at the plan's ε and δ on the pooled "
                "training rows in fedsynth's fine bins of the schema (none of the budget "
                "on preprocessing); workload every 3-way marginal of at most 10,000 cells, "
                "AIM's default rounds and model size; one seed per repeat")


def anchor_environment(folder: Path = ANCHOR_VENV) -> AnchorEnvironment:
    """The anchor's environment in `folder`, made (or remade, when its package list has
    changed) from the package registry."""
    marker = folder / _MARKER
    wanted = list(WITHOUT_REQUIREMENTS + REQUIREMENTS)
    if marker.exists():
        made = json.loads(marker.read_text(encoding="utf-8"))
        if made["packages"] == wanted and _python(folder).exists():
            return AnchorEnvironment(_python(folder), made["created_s"], made["size_bytes"],
                                     made_now=False)
    started = time.perf_counter()
    _run([sys.executable, "-m", "venv", "--clear", str(folder)])
    pip = [str(_python(folder)), "-m", "pip", "install", "--quiet"]
    _run(pip + list(REQUIREMENTS))
    _run(pip + ["--no-deps"] + list(WITHOUT_REQUIREMENTS))
    created = time.perf_counter() - started
    size = _size(folder)
    marker.write_text(json.dumps({"packages": wanted, "created_s": created,
                                  "size_bytes": size}), encoding="utf-8")
    return AnchorEnvironment(_python(folder), created, size, made_now=True)


def central_aim(environment: AnchorEnvironment, schema: Schema, real: pd.DataFrame,
                plan: StudyPlan, folder: Path) -> pd.DataFrame:
    """`plan.rows` records from AIM at `plan.epsilon`, `plan.delta` on all of `real` (the
    pooled training records), decoded to the schema's columns; `plan.seed` seeds the
    parts of AIM that take a seed (its noise is from a CSPRNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = build_layout(schema)
    pd.DataFrame(layout.fine_codes(real)).to_csv(folder / "codes.csv", index=False)
    domain = {col.name: layout.fine_size(col) for col in layout.columns}
    (folder / "domain.json").write_text(json.dumps(domain), encoding="utf-8")
    out = folder / "sampled-codes.csv"
    with open(folder / "central_aim.log", "w", encoding="utf-8") as log:
        finished = subprocess.run(
            [str(environment.python), str(SCRIPT), str(folder / "codes.csv"),
             str(folder / "domain.json"), str(out), "--epsilon", repr(plan.epsilon),
             "--delta", repr(plan.delta), "--rows", str(plan.rows), "--seed", str(plan.seed)],
            stdout=log, stderr=subprocess.STDOUT, env=_anchor_env(), check=False)
    if finished.returncode != 0:
        tail = (folder / "central_aim.log").read_text(encoding="utf-8")[-2000:]
        raise RuntimeError(f"central AIM failed (exit {finished.returncode}):\n{tail}")
    sampled = pd.read_csv(out)
    fine = {name: sampled[name].to_numpy(dtype=int) for name in domain}
    for name, codes in fine.items():
        if codes.min() < 0 or codes.max() >= domain[name]:
            raise RuntimeError(f"central AIM sampled a code outside column {name}'s bins")
    rng = np.random.default_rng([plan.seed, len(sampled)])
    decoded = layout.encoding.decode(fine_to_encoded(layout, fine, rng))
    decoded.to_csv(folder / "synthetic.csv", index=False)
    validation = check_file(folder / "synthetic.csv", schema)
    validation.raise_if_invalid()
    return validation.parsed


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def _anchor_env() -> dict[str, str]:
    """This process's environment without its Python path (the anchor imports nothing of
    fedsynth's), with jax kept on the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True)


def _size(folder: Path) -> int:
    return sum(path.lstat().st_size for path in folder.rglob("*")
               if path.is_file() and not path.is_symlink())
