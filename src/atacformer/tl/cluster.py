"""Clustering (kNN graph + Leiden) and UMAP on any embedding in ``obsm``."""

from __future__ import annotations

import logging

import igraph as ig
import leidenalg
import numpy as np
import pandas as pd
from anndata import AnnData

from ..metrics.batch import knn_graph

log = logging.getLogger(__name__)


def _rep(adata: AnnData, use_rep: str) -> np.ndarray:
    if use_rep == "X":
        return np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    if use_rep not in adata.obsm:
        raise ValueError(f"adata.obsm has no {use_rep!r} (has: {sorted(adata.obsm)}); run tl.embed or a baseline first")
    return np.asarray(adata.obsm[use_rep], dtype=np.float64)


def neighbors_graph(X: np.ndarray, *, n_neighbors: int = 15) -> ig.Graph:
    """Undirected kNN graph (symmetrised, unweighted) as igraph."""
    A = knn_graph(X, k=n_neighbors).tocoo()
    keep = A.row < A.col
    return ig.Graph(n=A.shape[0], edges=list(zip(A.row[keep].tolist(), A.col[keep].tolist())))


def leiden(graph: ig.Graph, *, resolution: float, seed: int = 0) -> np.ndarray:
    """Leiden partition (RB configuration model) → cluster id per node, largest cluster = 0."""
    part = leidenalg.find_partition(
        graph, leidenalg.RBConfigurationVertexPartition, resolution_parameter=resolution, seed=seed, n_iterations=-1
    )
    return np.asarray(part.membership)


def _search_resolution(graph: ig.Graph, n_clusters: int, seed: int, n_steps: int = 40) -> tuple[float, np.ndarray]:
    """Bisect the resolution until Leiden finds ``n_clusters`` clusters (closest count if never exact)."""
    lo, hi = 0.0, 1.0
    while len(np.unique(leiden(graph, resolution=hi, seed=seed))) < n_clusters and hi < 64:
        lo, hi = hi, hi * 2
    best = None
    for _ in range(n_steps):
        mid = (lo + hi) / 2
        memb = leiden(graph, resolution=mid, seed=seed)
        n = len(np.unique(memb))
        if best is None or abs(n - n_clusters) < abs(best[2] - n_clusters):
            best = (mid, memb, n)
        if n == n_clusters:
            return mid, memb
        lo, hi = (mid, hi) if n < n_clusters else (lo, mid)
    log.warning("no Leiden resolution gives %d clusters; using %d", n_clusters, best[2])
    return best[0], best[1]


def cluster(
    adata: AnnData,
    *,
    use_rep: str,
    resolution: float | None = None,
    n_clusters: int | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    key_added: str = "leiden",
) -> AnnData:
    """kNN graph on ``obsm[use_rep]`` + Leiden into ``obs[key_added]`` (categorical).

    Give ``resolution`` directly, or ``n_clusters`` to bisect the resolution until Leiden returns that
    many clusters (the evaluation protocol: same cluster count for every method). The resolution used
    is in ``uns[key_added]``."""
    if (resolution is None) == (n_clusters is None):
        raise ValueError("give exactly one of resolution= or n_clusters=")
    graph = neighbors_graph(_rep(adata, use_rep), n_neighbors=n_neighbors)
    if n_clusters is not None:
        if n_clusters < 1 or n_clusters > adata.n_obs:
            raise ValueError(f"n_clusters must be in [1, {adata.n_obs}], got {n_clusters}")
        resolution, memb = _search_resolution(graph, n_clusters, seed)
    else:
        memb = leiden(graph, resolution=resolution, seed=seed)
    cats = [str(c) for c in range(memb.max() + 1)]
    adata.obs[key_added] = pd.Categorical(memb.astype(str), categories=cats)
    adata.uns[key_added] = {
        "use_rep": use_rep, "resolution": float(resolution), "n_clusters": len(cats), "n_neighbors": n_neighbors
    }
    return adata


def umap(
    adata: AnnData, *, use_rep: str, n_neighbors: int = 15, min_dist: float = 0.3, n_epochs: int | None = None,
    seed: int = 0, key_added: str = "X_umap",
) -> AnnData:
    """2-D UMAP (umap-learn) of ``obsm[use_rep]`` into ``obsm[key_added]`` (``n_epochs`` None = umap's default)."""
    import umap as umap_learn  # numba compile on first import; keep it lazy

    X = _rep(adata, use_rep)
    reducer = umap_learn.UMAP(
        n_neighbors=min(n_neighbors, adata.n_obs - 1), min_dist=min_dist, n_epochs=n_epochs, random_state=seed, n_jobs=1
    )
    adata.obsm[key_added] = reducer.fit_transform(X).astype(np.float32)
    return adata
