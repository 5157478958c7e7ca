"""Every score of one embedding, from arrays: label agreement of a clustering, label conservation and
(optionally) batch mixing and cross-batch label transfer; and the metrics table as Markdown.

The evaluation protocol on an AnnData (cluster every embedding to the label count, then score it) is
:func:`atacformer.tl.evaluate`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .batch import batch_asw, celltype_asw, graph_connectivity, ilisi, kbet
from .labels import ari, knn_accuracy, knn_predict, macro_f1, nmi

#: column order of the metrics table
COLUMNS = ["ARI", "NMI", "kNN_acc", "celltype_ASW", "transfer_macro_F1", "iLISI", "kBET", "batch_ASW",
           "graph_conn"]


def score_embedding(
    X: np.ndarray, labels, *, clusters=None, batch=None, reference_batch: str | None = None, n_neighbors: int = 15,
) -> dict[str, float]:
    """Scores of an embedding against cell-type labels (and batches).

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    labels
        (n_cells,) cell-type labels.
    clusters
        (n_cells,) clustering of ``X`` (e.g. Leiden at the label count): gives ``ARI`` and ``NMI``.
    batch
        (n_cells,) batch of each cell: gives ``iLISI``, ``kBET``, ``batch_ASW``.
    reference_batch
        With ``batch``: labels of the other batches are predicted by kNN from this one
        (``transfer_macro_F1``).
    n_neighbors
        Neighbours of the kNN accuracy, the kNN transfer and the graph connectivity.

    Returns
    -------
    ``{metric: value}`` with ``kNN_acc`` (leave-one-out kNN accuracy), ``celltype_ASW``, ``graph_conn``,
    plus the metrics that ``clusters``, ``batch`` and ``reference_batch`` enable. All in [0, 1], higher
    is better (ARI can be slightly negative).
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(X):
        raise ValueError(f"{len(labels)} labels for an embedding of {len(X)} cells")
    out = {}
    if clusters is not None:
        out.update(ARI=ari(labels, clusters), NMI=nmi(labels, clusters))
    out.update(kNN_acc=knn_accuracy(X, labels, n_neighbors=n_neighbors), celltype_ASW=celltype_asw(X, labels),
               graph_conn=graph_connectivity(X, labels, n_neighbors=n_neighbors))
    if batch is not None:
        batch = np.asarray(batch).astype(str)
        out.update(iLISI=ilisi(X, batch), kBET=kbet(X, batch, labels=labels), batch_ASW=batch_asw(X, batch, labels))
        if reference_batch is not None:
            ref = batch == reference_batch
            if not ref.any() or ref.all():
                raise ValueError(f"reference batch {reference_batch!r} must hold some but not all cells")
            pred, _ = knn_predict(X[ref], labels[ref], X[~ref], n_neighbors=n_neighbors)
            out["transfer_macro_F1"] = macro_f1(labels[~ref], pred)
    return out


def to_markdown(table: pd.DataFrame, *, digits: int = 3, index_name: str = "method") -> str:
    """A table as GitHub Markdown (no extra dependency).

    Parameters
    ----------
    table
        Rows = methods (the index), columns = metrics.
    digits
        Decimals of floating-point cells (integers print as integers; NaN as an empty cell).
    index_name
        Header of the index column.

    Returns
    -------
    The Markdown text, ending with a newline.
    """
    cols = list(table.columns)
    lines = ["| " + " | ".join([index_name, *map(str, cols)]) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *(_cell(v, digits) for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def _cell(v, digits: int) -> str:
    """One Markdown cell: NaN/NA empty, integers as integers, floats rounded, anything else as text."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        return str(v)
    return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)
