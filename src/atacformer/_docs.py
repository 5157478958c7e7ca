"""Shared numpydoc parameter descriptions for ``pp`` / ``tl`` / ``pl`` (written once, as scanpy does).

A function's docstring names a snippet as ``{doc_adata}`` on its own line and is decorated with
:func:`doc_params`; the docstring is cleaned (:func:`inspect.cleandoc`) and then formatted, so each
snippet is written at column 0 here and lands at the right indentation there. Literal braces in a
decorated docstring are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import inspect

doc_adata = """\
adata
    Cells × bins (or cells × features) annotated data matrix."""

doc_use_rep = """\
use_rep
    Key of the embedding in ``adata.obsm`` to use (``"X"`` = ``adata.X``)."""

doc_n_neighbors = """\
n_neighbors
    Number of nearest neighbours of each cell (the cell itself not counted)."""

doc_batch_key = """\
batch_key
    Column of ``adata.obs`` holding the batch (donor, sample, dataset) of each cell."""

doc_labels_key = """\
labels_key
    Column of ``adata.obs`` holding the cell-type label of each cell."""

doc_seed = """\
seed
    Random seed; the same seed gives the same result."""

doc_copy = """\
copy
    Return a modified copy instead of writing into ``adata``."""

doc_returns_copy = """\
Returns ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`. Sets the following fields:"""

doc_n_comps = """\
n_comps
    Number of embedding components to compute."""

doc_show_save = """\
ax
    Draw into this matplotlib Axes (single-panel plots only); a new figure otherwise.
show
    Show the figure (``plt.show()``). Default: only when no ``save`` path is given and matplotlib
    runs an interactive backend.
save
    Write the figure as a PNG to this path (atomically: a temporary file, then renamed)."""

doc_plot_returns = """\
The Axes (a list of Axes for several panels) when ``show=False``, otherwise ``None``."""

_SNIPPETS = {name: value for name, value in globals().items() if name.startswith("doc_")}


def doc_params(**extra: str):
    """Decorator: fill the ``{doc_*}`` placeholders of a function's docstring with the shared snippets
    (plus ``extra`` ones)."""

    def decorate(func):
        func.__doc__ = inspect.cleandoc(func.__doc__ or "").format_map({**_SNIPPETS, **extra})
        return func

    return decorate
