"""Figure plumbing shared by the plots: new or given Axes, then save (atomic PNG) and/or show, as scanpy."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from .._atomic import atomic_path

_NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def interactive() -> bool:
    """Whether matplotlib runs a backend that can show figures (a GUI or a notebook's inline backend)."""
    return str(matplotlib.get_backend()).lower() not in _NON_INTERACTIVE


def save_png(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to a temporary file in the target folder, then rename it into place."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)


def panels(n: int, *, ax=None, size: float = 4.0, ncols: int = 3, aspect: float = 1.0):
    """(figure, list of ``n`` Axes, whether the figure is ours): a new grid (constrained layout, so titles
    and axis labels never overlap), or the caller's single ``ax``."""
    if ax is not None:
        if n != 1:
            raise ValueError(f"ax= draws a single panel, but this plot has {n} panels; leave ax out")
        return ax.figure, [ax], False
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * aspect * nrows), squeeze=False,
                             layout="constrained")
    for extra in axes.ravel()[n:]:
        extra.axis("off")
    return fig, list(axes.ravel()[:n]), True


def finish(fig, axes: list, *, own: bool, show: bool | None, save: str | Path | None):
    """Save (atomic PNG) and/or show; close a figure we made once it is saved. Returns the Axes (one or a
    list) only when ``show is False`` — scanpy's convention."""
    want_axes = show is False
    if show is None:
        show = save is None and interactive()
    if save is not None:
        save_png(fig, save)
    if show:
        plt.show()
    if save is not None and own:
        plt.close(fig)
    if not want_axes:
        return None
    return axes[0] if len(axes) == 1 else axes
