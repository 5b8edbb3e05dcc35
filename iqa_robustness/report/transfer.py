"""The transfer matrix drawn: source x target normalised absolute gain as a heatmap (matplotlib, no pyplot).

Rows are the sources (an attack against a metric, or a published perturbation by its file),
columns the target metrics; the outlined cells are each source's own metric (the diagonal).
Shared by ``iqa-robustness transfer`` and the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the matrix's colour map: red = fooled (positive gain), blue = moved towards worse quality
CMAP = "RdBu_r"


def draw_matrix(fig: Any, matrix: Mapping[str, Any], title: str = "") -> None:
    """Draw ``matrix`` (:func:`~iqa_robustness.scores.transfer.transfer_matrix`) on the matplotlib figure ``fig``."""
    import numpy as np
    from matplotlib.patches import Rectangle

    values = np.array(matrix["values"], dtype=np.float64).reshape(len(matrix["sources"]), len(matrix["targets"]))
    finite = values[np.isfinite(values)]
    bound = float(np.max(np.abs(finite))) if finite.size else 1.0
    bound = bound if bound > 0 else 1.0
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=CMAP, vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(matrix["targets"])), matrix["targets"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix["sources"])), matrix["sources"], fontsize=8)
    ax.set_xlabel("target metric", fontsize=8)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            text = "n/a" if not math.isfinite(value) else f"{value:.3g}"
            dark = math.isfinite(value) and abs(value) > 0.6 * bound
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            if matrix["own"][i][j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label("norm. abs. gain on the target (higher = more fooled)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(title or "transfer: normalised absolute gain (outlined: the source's own metric)", fontsize=8)
    fig.tight_layout()


def figure_size(matrix: Mapping[str, Any]) -> tuple[float, float]:
    """Inches that fit the matrix's labels and cells."""
    longest = max((len(s) for s in matrix["sources"]), default=10)
    return 3.0 + 0.075 * longest + 1.1 * len(matrix["targets"]), 1.8 + 0.45 * len(matrix["sources"])


def save_matrix_png(matrix: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """The heatmap as a PNG file at ``path`` (parent folders are created)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figure_size(matrix), dpi=100)
    FigureCanvasAgg(fig)
    draw_matrix(fig, matrix, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
