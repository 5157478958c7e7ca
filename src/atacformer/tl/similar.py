"""``tl.similar_sets``: nearest-neighbour search between region sets (or cells), on an embedding or on the
open bins themselves (Jaccard)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

METRICS = ("cosine", "euclidean", "jaccard")


def _rep(adata: AnnData, use_rep: str, what: str):
    if use_rep == "X":
        return adata.X
    if use_rep not in adata.obsm:
        raise ValueError(f"{what}.obsm has no {use_rep!r} (have: {sorted(adata.obsm)}); run tl.embed first, "
                         "or use_rep='X' for the open bins")
    return np.asarray(adata.obsm[use_rep], dtype=np.float64)


def _jaccard(Q, R) -> np.ndarray:
    """(n_query, n_reference) Jaccard index of the open (non-zero) entries of two rows × bins matrices."""
    Q, R = (sp.csr_matrix(M, dtype=np.float64, copy=True) for M in (Q, R))
    for M in (Q, R):
        M.data[:] = 1.0
        M.eliminate_zeros()
    inter = (Q @ R.T).toarray()
    union = np.asarray(Q.sum(1)) + np.asarray(R.sum(1)).T - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def similarity(Q, R, metric: str) -> np.ndarray:
    """(n_query, n_reference) similarity, larger = closer: cosine, −Euclidean distance or Jaccard."""
    if metric == "jaccard":
        return _jaccard(Q, R)
    Q = Q.toarray() if sp.issparse(Q) else np.asarray(Q, dtype=np.float64)
    R = R.toarray() if sp.issparse(R) else np.asarray(R, dtype=np.float64)
    if metric == "cosine":
        Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        Rn = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-12)
        return Qn @ Rn.T
    d2 = (Q**2).sum(1)[:, None] + (R**2).sum(1)[None, :] - 2 * Q @ R.T
    return -np.sqrt(np.maximum(d2, 0.0))


def _top_k(Q, R, metric: str, k: int, *, exclude_self: bool, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(n_query, k) indices of the most similar reference rows and their similarities, ``chunk`` query rows
    at a time (memory: chunk × n_reference); ties go to the earlier reference row."""
    order, best = [], []
    for start in range(0, Q.shape[0], chunk):
        sim = similarity(Q[start : start + chunk], R, metric)
        if exclude_self:
            rows = np.arange(sim.shape[0])
            sim[rows, start + rows] = -np.inf
        idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        order.append(idx)
        best.append(np.take_along_axis(sim, idx, axis=1))
    return np.concatenate(order), np.concatenate(best)


def similar_sets(
    query: AnnData, reference: AnnData | None = None, *, use_rep: str = "X_atacformer", n_neighbors: int = 10,
    metric: str | None = None, key_added: str = "similar_sets",
) -> pd.DataFrame:
    """The ``n_neighbors`` most similar reference rows (region sets) of every query row.

    Parameters
    ----------
    query
        Region sets (or cells) × bins with ``obsm[use_rep]`` (:func:`atacformer.tl.embed`).
    reference
        Rows to search, with the same ``obsm[use_rep]``; None = ``query`` itself (a row is not its own
        neighbour). It is not changed.
    use_rep
        ``obsm`` key of the embedding, or ``"X"`` for the open bins.
    n_neighbors
        Neighbours per query row (at most the number of reference rows).
    metric
        ``"cosine"`` (default for embeddings), ``"euclidean"`` or ``"jaccard"`` (default for ``"X"``: shared
        open bins / bins open in either).
    key_added
        ``query.uns[key_added]`` gets the table and the parameters.

    Returns
    -------
    The table (also in ``query.uns[key_added]["table"]``): one row per (query row, rank) with ``query``,
    ``rank`` (1 = most similar), ``reference`` (obs name) and ``similarity`` (larger = closer; −distance
    for ``"euclidean"``).
    """
    metric = metric or ("jaccard" if use_rep == "X" else "cosine")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    ref = query if reference is None else reference
    n_ref = ref.n_obs - (1 if reference is None else 0)
    if n_neighbors < 1 or n_ref < 1:
        raise ValueError(f"need n_neighbors >= 1 and a reference row to compare with, got {n_neighbors}, {n_ref}")
    if reference is not None and use_rep == "X" and query.n_vars != reference.n_vars:
        raise ValueError(f"query has {query.n_vars} bins but reference {reference.n_vars}: not on the same bins")
    k = min(n_neighbors, n_ref)
    order, best = _top_k(_rep(query, use_rep, "query"), _rep(ref, use_rep, "reference"), metric, k,
                         exclude_self=reference is None)
    table = pd.DataFrame({
        "query": np.repeat(query.obs_names.to_numpy(dtype=str), k),
        "rank": np.tile(np.arange(1, k + 1), query.n_obs),
        "reference": ref.obs_names.to_numpy(dtype=str)[order.ravel()],
        "similarity": best.ravel(),
    })
    query.uns[key_added] = {"table": table, "params": {"use_rep": use_rep, "metric": metric, "n_neighbors": k,
                                                        "reference": "query" if reference is None else "reference"}}
    return table
