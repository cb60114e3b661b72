"""The heatmap, drawn like the paper's Figure 1 (its visualize.py): lengths on x, depths on y,
the paper's red-yellow-green colour map over 0-1, grey cell borders, a dashed line after the
last length within the training length, and the model and score in the title."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

# The colours of the paper's visualize.py (red, yellow, green).
PAPER_COLOURS = ["#F0496E", "#EBB839", "#0CD79F"]


def heatmap_png(
    cells: Iterable[Mapping[str, Any]],
    *,
    model: str,
    score: float,
    paper_score: float,
    training_length: int | None = None,
    paper_max: float | None = None,
) -> bytes:
    """PNG bytes of the grid's heatmap; a cell's colour is its clean score / 100 (0-1)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    rows = list(cells)
    lengths = sorted({r["length"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for r in rows:
        grid[depths.index(r["depth"]), lengths.index(r["length"])] = r["score"] / 100.0

    cmap = LinearSegmentedColormap.from_list("needle", PAPER_COLOURS)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.42 * len(lengths) + 2.5), max(3.5, 0.45 * len(depths) + 2))
    )
    mesh = ax.pcolormesh(grid, cmap=cmap, vmin=0, vmax=1, edgecolors="grey", linewidth=0.5)
    fig.colorbar(mesh, ax=ax, label="Score")
    ax.set_xticks([i + 0.5 for i in range(len(lengths))], [str(n) for n in lengths], rotation=45)
    ax.set_yticks([i + 0.5 for i in range(len(depths))], [f"{d:g}" for d in depths])
    ax.invert_yaxis()  # depth 0 (the start of the context) at the top, as in the paper
    ax.set_xlabel("Token Limit")
    ax.set_ylabel("Depth Percent")
    if training_length is not None:
        within = sum(1 for n in lengths if n <= training_length)
        if 0 < within < len(lengths):
            ax.axvline(x=within, color="white", linestyle="--", linewidth=3)
    ax.set_title(
        f"Pressure Testing {model}\n"
        f'Fact Retrieval Across Context Lengths ("Needle In A HayStack")\n'
        f"score {score:.1f} / 100, paper-compatible {paper_score:.1f}"
        + (f" / {paper_max:.1f}" if paper_max is not None else ""),
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
