"""The evaluation protocol: every embedding clustered to the label count, scored against labels and
(optionally) batches, plus cross-batch label transfer; results as a tidy table, JSON and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._atomic import write_text
from .batch import batch_asw, celltype_asw, graph_connectivity, ilisi, kbet
from .labels import ari, knn_accuracy, knn_predict, macro_f1, nmi

#: column order of the metrics table
COLUMNS = ["ARI", "NMI", "kNN_acc", "celltype_ASW", "transfer_macro_F1", "iLISI", "kBET", "batch_ASW",
           "graph_conn"]


def evaluate_embedding(
    adata: AnnData, *, use_rep: str, labels_key: str, batch_key: str | None = None,
    reference_batch: str | None = None, k: int = 15, seed: int = 0, cluster_key: str | None = None,
) -> dict[str, float]:
    """Scores of ``obsm[use_rep]``: Leiden with as many clusters as labels (ARI, NMI), leave-one-out kNN
    accuracy, cell-type ASW; with ``batch_key`` also iLISI, kBET, batch ASW, graph connectivity; with
    ``reference_batch`` the macro-F1 of kNN transfer from that batch to the others."""
    from ..tl.cluster import (
        cluster,  # tl imports metrics; keep the dependency one-way at import time
    )

    if labels_key not in adata.obs:
        raise ValueError(f"adata.obs has no {labels_key!r} column")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    X = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    key = cluster_key or f"leiden_{use_rep}"
    cluster(adata, use_rep=use_rep, n_clusters=len(np.unique(labels)), seed=seed, key_added=key)
    out = {"ARI": ari(labels, adata.obs[key]), "NMI": nmi(labels, adata.obs[key]), "n_clusters": adata.uns[key]["n_clusters"],
           "resolution": adata.uns[key]["resolution"], "kNN_acc": knn_accuracy(X, labels, k=k),
           "celltype_ASW": celltype_asw(X, labels), "graph_conn": graph_connectivity(X, labels, k=k)}
    if batch_key is not None:
        batch = adata.obs[batch_key].astype(str).to_numpy()
        out.update(iLISI=ilisi(X, batch), kBET=kbet(X, batch, labels=labels), batch_ASW=batch_asw(X, batch, labels))
        if reference_batch is not None:
            ref = batch == reference_batch
            if not ref.any() or ref.all():
                raise ValueError(f"reference batch {reference_batch!r} must hold some but not all cells")
            pred, _ = knn_predict(X[ref], labels[ref], X[~ref], k=k)
            out["transfer_macro_F1"] = macro_f1(labels[~ref], pred)
    return out


def evaluate(
    adata: AnnData, *, reps: dict[str, str], labels_key: str, batch_key: str | None = None,
    reference_batch: str | None = None, seed: int = 0, key_added: str = "atacformer_evaluation",
) -> pd.DataFrame:
    """:func:`evaluate_embedding` for each ``{method name: obsm key}``; a methods × metrics table,
    also stored in ``uns[key_added]``."""
    rows = {name: evaluate_embedding(adata, use_rep=rep, labels_key=labels_key, batch_key=batch_key,
                                     reference_batch=reference_batch, seed=seed, cluster_key=f"leiden_{name}")
            for name, rep in reps.items()}
    table = pd.DataFrame(rows).T
    table = table[[c for c in COLUMNS if c in table] + [c for c in table if c not in COLUMNS]]
    adata.uns[key_added] = table
    return table


def to_markdown(table: pd.DataFrame, *, digits: int = 3, index_name: str = "method") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join([index_name, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, row in table.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) and np.isfinite(v) else
                 ("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)) for v in row]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_results(table: pd.DataFrame, directory: str | Path, *, name: str = "metrics", extra: dict | None = None):
    """``<name>.json`` (records + ``extra``) and ``<name>.md`` in ``directory``; returns both paths."""
    directory = Path(directory)
    clean = table.astype(object).where(pd.notna(table), None)
    payload = {"metrics": {str(i): {str(c): (float(v) if isinstance(v, (int, float, np.number)) else v)
                                    for c, v in r.items()} for i, r in clean.iterrows()}, **(extra or {})}
    j = write_text(directory / f"{name}.json", json.dumps(payload, indent=2, default=str))
    m = write_text(directory / f"{name}.md", to_markdown(table))
    return j, m
