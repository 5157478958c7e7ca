"""Figure helpers: Agg backend, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from .._atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to a temporary file in the target folder, then rename it into place."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)


def subplots(n: int, *, size: float = 4.0, ncols: int = 3):
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()[:n]
