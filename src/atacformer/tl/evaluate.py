"""The evaluation protocol on an AnnData: every embedding clustered (Leiden) to as many clusters as there
are labels and scored with :func:`atacformer.metrics.score_embedding`; a methods × metrics table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._atomic import write_text
from .._docs import doc_params
from ..metrics import COLUMNS, knn_graphs, score_embedding, to_markdown
from .cluster import get_rep, leiden_clusters


def _check_keys(adata: AnnData, reps: dict[str, str], labels_key: str, batch_key: str | None) -> None:
    if not reps:
        raise ValueError("reps is empty: give {method name: obsm key}")
    for key in (labels_key, batch_key):
        if key is not None and key not in adata.obs:
            raise ValueError(f"adata.obs has no {key!r} column")
    missing = {name: rep for name, rep in reps.items() if rep != "X" and rep not in adata.obsm}
    if missing:
        raise ValueError(f"adata.obsm lacks {missing} (has: {sorted(adata.obsm)})")


def _score_rep(X, labels, batch, reference_batch, n_neighbors: int, seed: int) -> tuple[dict, np.ndarray]:
    """(scores, clusters) of one embedding under the protocol of :func:`evaluate`."""
    conn, _ = knn_graphs(X, n_neighbors=n_neighbors)
    memb, resolution = leiden_clusters(conn, n_clusters=len(np.unique(labels)), seed=seed, X=X)
    scores = score_embedding(X, labels, clusters=memb, batch=batch, reference_batch=reference_batch,
                             n_neighbors=n_neighbors)
    return {**scores, "n_clusters": len(np.unique(memb)), "resolution": resolution}, memb


@doc_params()
def evaluate(
    adata: AnnData,
    *,
    reps: dict[str, str],
    labels_key: str,
    batch_key: str | None = None,
    reference_batch: str | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    key_added: str = "atacformer_evaluation",
    clusters_prefix: str | None = None,
) -> pd.DataFrame:
    """Score embeddings against labels (and batches) with one protocol.

    For each embedding: a kNN graph (``n_neighbors``), Leiden with the resolution bisected until it
    returns as many clusters as ``labels_key`` has labels, then ARI and NMI of the clusters, kNN
    accuracy, cell-type ASW and graph connectivity; with ``batch_key`` also iLISI, kBET and batch ASW;
    with ``reference_batch`` the macro-F1 of kNN label transfer from that batch to the others
    (:func:`atacformer.metrics.score_embedding`).

    Parameters
    ----------
    {doc_adata}
    reps
        ``{{method name: obsm key}}`` of the embeddings to score.
    {doc_labels_key}
    {doc_batch_key}
    reference_batch
        Batch whose labels are transferred to the other batches.
    {doc_n_neighbors}
    {doc_seed}
    key_added
        ``uns`` key of the table.
    clusters_prefix
        Also keep each method's clusters in ``obs[clusters_prefix + name]`` (``None``: not kept).

    Returns
    -------
    The methods × metrics table (columns as :data:`atacformer.metrics.COLUMNS`, then ``n_clusters`` and
    ``resolution``). Sets the following fields:

    ``adata.uns[key_added]`` : DataFrame
        The same table.
    ``adata.obs[clusters_prefix + name]`` : categorical
        Only when ``clusters_prefix`` is given.
    """
    _check_keys(adata, reps, labels_key, batch_key)
    labels = adata.obs[labels_key].astype(str).to_numpy()
    batch = adata.obs[batch_key].astype(str).to_numpy() if batch_key is not None else None
    rows = {}
    for name, rep in reps.items():
        rows[name], memb = _score_rep(get_rep(adata, rep), labels, batch, reference_batch, n_neighbors, seed)
        if clusters_prefix is not None:
            adata.obs[clusters_prefix + name] = pd.Categorical(memb.astype(str),
                                                               categories=[str(c) for c in range(memb.max() + 1)])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table[[c for c in COLUMNS if c in table] + [c for c in table if c not in COLUMNS]]
    table["n_clusters"] = table["n_clusters"].astype("Int64")
    adata.uns[key_added] = table
    return table


def write_evaluation(table: pd.DataFrame, directory: str | Path, *, name: str = "metrics",
                     extra: dict | None = None) -> tuple[Path, Path]:
    """Write an evaluation table as ``<name>.json`` and ``<name>.md`` in ``directory`` (atomically).

    Parameters
    ----------
    table
        Methods × metrics (e.g. from :func:`evaluate`).
    directory
        Output folder (created if needed).
    name
        File stem.
    extra
        More JSON fields beside ``metrics`` (settings, timings, …).

    Returns
    -------
    The paths of the JSON and the Markdown file. The JSON holds ``{"metrics": {method: {metric:
    value}}, **extra}`` with missing values as null.
    """
    directory = Path(directory)
    metrics = {str(i): {str(c): _json_value(v) for c, v in row.items()} for i, row in table.iterrows()}
    j = write_text(directory / f"{name}.json", json.dumps({"metrics": metrics, **(extra or {})}, indent=2, default=str))
    m = write_text(directory / f"{name}.md", to_markdown(table))
    return j, m


def _json_value(v):
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(v) if isinstance(v, (float, np.floating)) else v
