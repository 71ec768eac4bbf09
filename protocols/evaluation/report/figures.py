"""The figures of an evaluation report, drawn off-screen as PNG data URIs.

Each function takes plain JSON values from `report["figures"]` (as built by
`protocols.evaluation.evaluate_cohort`) and returns a `data:image/png;base64,…`
string, so `protocols.evaluation.report.html` can embed it and the page needs no other
file. Drawing uses `Figure` with the Agg canvas directly, never pyplot: no
global figure registry, no GUI backend, nothing to close, safe on a headless
hospital server and in threads.

Missing values (`None`, as strict JSON writes NaN) are drawn as gaps. Labels
are drawn as plain text (no mathtext), because they come from users' files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Paul Tol's colour-blind-safe pair; the same two colours in every figure.
REAL_COLOUR = "#4477AA"
SYNTHETIC_COLOUR = "#EE6677"
ASSOCIATION_CMAP = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
DPI = 96
_LABEL_CHARS = 18
_TITLE_CHARS = 40


def png_data_uri(figure: Figure) -> str:
    """The figure as a base64 PNG data URI (no timestamp or software metadata)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def marginal_figure(marginal: Mapping[str, Any]) -> str:
    """One column's distribution, real against synthetic, as a small bar chart.

    Discrete columns get two bars per category; numeric columns get histogram
    bins over `edges` (len(real) + 1 of them).
    """
    n_labels = len(marginal.get("labels") or ())
    figure = Figure(figsize=(max(3.6, 0.22 * n_labels + 1.2), 2.8), layout="constrained")
    ax = figure.add_subplot()
    if marginal["kind"] == "discrete":
        _discrete_bars(ax, marginal)
    else:
        _numeric_bars(ax, marginal)
    ax.set_title(_short(marginal["column"], _TITLE_CHARS), fontsize=9, pad=16,
                 parse_math=False)
    ax.set_ylabel("share of rows", fontsize=8)
    ax.tick_params(labelsize=7)
    # Above the plot, where it never hides a bar.
    ax.legend(fontsize=7, frameon=False, ncols=2, loc="lower center",
              bbox_to_anchor=(0.5, 1.0), borderaxespad=0.1)
    return png_data_uri(figure)


def association_figure(association: Mapping[str, Any]) -> str | None:
    """Real and synthetic association heatmaps side by side on one -1..1 scale.

    Returns None when there are no columns to draw.
    """
    columns = [_short(c, _LABEL_CHARS) for c in association["columns"]]
    if not columns:
        return None
    side = min(7.0, max(2.6, 0.28 * len(columns) + 1.4))
    figure = Figure(figsize=(2 * side + 1.2, side + 0.4), layout="constrained")
    axes = figure.subplots(1, 2)
    fontsize = 7 if len(columns) <= 20 else 5
    image = None
    for ax, key in zip(axes, ("real", "synthetic")):
        image = ax.imshow(_matrix(association[key]), cmap=ASSOCIATION_CMAP, vmin=-1.0,
                          vmax=1.0, interpolation="nearest")
        ticks = np.arange(len(columns))
        ax.set_xticks(ticks, columns, rotation=90, fontsize=fontsize, parse_math=False)
        ax.set_yticks(ticks, columns, fontsize=fontsize, parse_math=False)
        ax.set_title(key, fontsize=9)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="association (grey: none)")
    return png_data_uri(figure)


def km_figure(km: Mapping[str, Any], time_label: str = "time") -> str:
    """Kaplan–Meier survival curves, real against synthetic, as step plots."""
    figure = Figure(figsize=(5.2, 3.2), layout="constrained")
    ax = figure.add_subplot()
    for key, colour in (("real", REAL_COLOUR), ("synthetic", SYNTHETIC_COLOUR)):
        curve = km[key]
        ax.step(_floats(curve["time"]), _floats(curve["survival"]), where="post",
                color=colour, label=key)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel(_short(time_label, _TITLE_CHARS), fontsize=8, parse_math=False)
    ax.set_ylabel("survival probability", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=8, frameon=False)
    return png_data_uri(figure)


def _discrete_bars(ax: Axes, marginal: Mapping[str, Any]) -> None:
    positions = np.arange(len(marginal["labels"]))
    ax.bar(positions - 0.2, _floats(marginal["real"]), 0.4, color=REAL_COLOUR, label="real")
    ax.bar(positions + 0.2, _floats(marginal["synthetic"]), 0.4, color=SYNTHETIC_COLOUR,
           label="synthetic")
    labels = [_short(label, _LABEL_CHARS) for label in marginal["labels"]]
    tilt = len(labels) > 4 or any(len(label) > 6 for label in labels)
    ax.set_xticks(positions, labels, rotation=45 if tilt else 0,
                  ha="right" if tilt else "center", rotation_mode="anchor", parse_math=False)


def _numeric_bars(ax: Axes, marginal: Mapping[str, Any]) -> None:
    """Real as filled bins, synthetic as an outline over the same bins, so both stay
    readable at twenty bins."""
    edges = _floats(marginal["edges"])
    ax.stairs(_floats(marginal["real"]), edges, fill=True, color=REAL_COLOUR, alpha=0.55,
              label="real")
    ax.stairs(_floats(marginal["synthetic"]), edges, color=SYNTHETIC_COLOUR, linewidth=1.8,
              label="synthetic")


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _matrix(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([_floats(row) for row in rows], dtype=float)


def _short(text: Any, limit: int) -> str:
    """A label cut to `limit` characters so a long name does not squeeze the plot."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
