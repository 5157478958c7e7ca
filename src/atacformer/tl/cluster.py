"""Clustering (kNN graph + Leiden) and UMAP on any embedding in ``obsm``, stored the way scanpy stores
them (``obsp['connectivities']``/``obsp['distances']`` + ``uns['neighbors']``, ``obsm['X_umap']`` +
``uns['umap']``), so ``sc.tl.umap``/``sc.pl.*`` can read atacformer output."""

from __future__ import annotations

import logging

import igraph as ig
import leidenalg
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import doc_params
from ..metrics import knn_graphs

log = logging.getLogger(__name__)


def get_rep(adata: AnnData, use_rep: str) -> np.ndarray:
    """An embedding of ``adata`` as a dense float64 array.

    Parameters
    ----------
    adata
        Annotated data matrix.
    use_rep
        ``obsm`` key, or ``"X"`` for ``adata.X``.

    Returns
    -------
    (n_cells, d) array; a missing key is a ValueError naming the keys there are.
    """
    if use_rep == "X":
        return np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    if use_rep not in adata.obsm:
        raise ValueError(f"adata.obsm has no {use_rep!r} (has: {sorted(adata.obsm)}); run tl.embed or a baseline first")
    return np.asarray(adata.obsm[use_rep], dtype=np.float64)


def _igraph(connectivities: sp.spmatrix) -> ig.Graph:
    A = sp.csr_matrix(connectivities).tocoo()
    keep = A.row < A.col
    return ig.Graph(n=A.shape[0], edges=list(zip(A.row[keep].tolist(), A.col[keep].tolist(), strict=False)))


def leiden(graph: ig.Graph, *, resolution: float, seed: int = 0) -> np.ndarray:
    """Leiden partition (RB configuration model, iterated to convergence) of an igraph graph.

    Parameters
    ----------
    graph
        Undirected graph.
    resolution
        Resolution parameter.
    seed
        Leiden's seed.

    Returns
    -------
    (n_nodes,) cluster id of each node.
    """
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


def merge_to(memb: np.ndarray, X: np.ndarray, n_clusters: int) -> np.ndarray:
    """Merge clusters until ``n_clusters`` remain: the smallest joins the one with the nearest centroid.

    Leiden cannot return fewer clusters than the kNN graph has connected components (a small group of
    cells whose neighbours are all among themselves is always its own cluster); this reaches the wanted
    count anyway, moving as few cells as possible.

    Parameters
    ----------
    memb
        (n,) cluster ids.
    X
        (n, d) embedding the clusters were found in.
    n_clusters
        Wanted number of clusters (at most the current count).

    Returns
    -------
    (n,) cluster ids ``0 .. n_clusters - 1``, the largest cluster first.
    """
    memb = np.unique(memb, return_inverse=True)[1]
    X = np.asarray(X, dtype=np.float64)
    while memb.max() + 1 > n_clusters:
        sizes = np.bincount(memb)
        centroids = np.stack([X[memb == c].mean(0) for c in range(len(sizes))])
        small = int(np.argmin(sizes))
        d = ((centroids - centroids[small]) ** 2).sum(1)
        d[small] = np.inf
        memb = np.unique(np.where(memb == small, int(np.argmin(d)), memb), return_inverse=True)[1]
    order = np.argsort(-np.bincount(memb), kind="stable")
    return np.argsort(order)[memb]


def leiden_clusters(
    connectivities: sp.spmatrix, *, resolution: float | None = None, n_clusters: int | None = None, seed: int = 0,
    X: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Leiden on a graph given as a (n, n) adjacency matrix (the array level of :func:`cluster`).

    Parameters
    ----------
    connectivities
        Symmetric adjacency (e.g. from :func:`atacformer.metrics.knn_graphs`).
    resolution
        Leiden resolution; or
    n_clusters
        bisect the resolution until Leiden returns this many clusters (the closest count if none does).
    seed
        Leiden's seed.
    X
        The (n, d) embedding of the graph: with ``n_clusters``, when every resolution gives more clusters
        than wanted (more connected components than ``n_clusters``), the closest ones are merged
        (:func:`merge_to`) instead of returning the wrong count.

    Returns
    -------
    ``(membership, resolution)``: int cluster per cell (0 = the first cluster Leiden lists) and the
    resolution used.
    """
    if (resolution is None) == (n_clusters is None):
        raise ValueError("give exactly one of resolution= or n_clusters=")
    n = connectivities.shape[0]
    graph = _igraph(connectivities)
    if n_clusters is None:
        return leiden(graph, resolution=resolution, seed=seed), float(resolution)
    if n_clusters < 1 or n_clusters > n:
        raise ValueError(f"n_clusters must be in [1, {n}], got {n_clusters}")
    resolution, memb = _search_resolution(graph, n_clusters, seed)
    if X is not None and len(np.unique(memb)) > n_clusters:
        log.warning("merging %d Leiden clusters to %d by centroid distance (the kNN graph has more connected "
                    "components than clusters wanted)", len(np.unique(memb)), n_clusters)
        memb = merge_to(memb, X, n_clusters)
    return memb, float(resolution)


def store_neighbors(adata: AnnData, connectivities, distances, *, use_rep: str, n_neighbors: int,
                    key_added: str = "neighbors") -> None:
    """Write a kNN graph where scanpy keeps one.

    Parameters
    ----------
    adata
        Annotated data matrix (written into).
    connectivities, distances
        (n, n) sparse graphs (:func:`atacformer.metrics.knn_graphs`).
    use_rep, n_neighbors
        What the graph was built from, recorded in ``params``.
    key_added
        scanpy's ``neighbors_key``.

    Returns
    -------
    None. Sets ``adata.obsp['connectivities' | key_added + '_connectivities']``, ``adata.obsp['distances' |
    key_added + '_distances']`` and ``adata.uns[key_added]`` = ``{connectivities_key, distances_key, params}``.
    """
    ck, dk = ("connectivities", "distances") if key_added == "neighbors" else (
        f"{key_added}_connectivities", f"{key_added}_distances")
    adata.obsp[ck], adata.obsp[dk] = connectivities, distances
    adata.uns[key_added] = {"connectivities_key": ck, "distances_key": dk, "params": {
        "n_neighbors": int(n_neighbors), "method": "knn", "metric": "euclidean", "use_rep": use_rep}}


@doc_params()
def cluster(
    adata: AnnData,
    *,
    use_rep: str,
    resolution: float | None = None,
    n_clusters: int | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    key_added: str = "leiden",
    neighbors_key: str = "neighbors",
    copy: bool = False,
) -> AnnData | None:
    """Leiden clustering of the kNN graph of an embedding.

    Give ``resolution`` directly, or ``n_clusters`` to bisect the resolution until Leiden returns that
    many clusters (the evaluation protocol: the same cluster count for every method).

    Parameters
    ----------
    {doc_adata}
    {doc_use_rep}
    resolution
        Leiden resolution (RB configuration model).
    n_clusters
        Wanted number of clusters, instead of ``resolution``.
    {doc_n_neighbors}
    {doc_seed}
    key_added
        ``obs`` column of the clusters and ``uns`` key of their parameters.
    neighbors_key
        Where the kNN graph is stored (scanpy's ``neighbors_key``).
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obs[key_added]`` : categorical
        Cluster of each cell (``"0"``, ``"1"``, …).
    ``adata.uns[key_added]`` : dict
        ``params`` (``resolution``, ``random_state``, ``n_iterations``, ``use_rep``, ``n_neighbors``)
        and ``n_clusters``.
    ``adata.obsp['connectivities']``, ``adata.obsp['distances']`` : sparse (n, n)
        The kNN graph (binary symmetric adjacency; neighbour distances), with
        ``adata.uns['neighbors']`` = ``{{'connectivities_key', 'distances_key', 'params'}}`` as scanpy
        writes them (prefixed by ``neighbors_key`` when it is not ``"neighbors"``).
    """
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep)
    conn, dist = knn_graphs(X, n_neighbors=n_neighbors)
    memb, resolution = leiden_clusters(conn, resolution=resolution, n_clusters=n_clusters, seed=seed, X=X)
    cats = [str(c) for c in range(memb.max() + 1)]
    adata.obs[key_added] = pd.Categorical(memb.astype(str), categories=cats)
    adata.uns[key_added] = {"params": {"resolution": resolution, "random_state": seed, "n_iterations": -1,
                                       "use_rep": use_rep, "n_neighbors": n_neighbors}, "n_clusters": len(cats)}
    store_neighbors(adata, conn, dist, use_rep=use_rep, n_neighbors=n_neighbors, key_added=neighbors_key)
    return adata if copy else None


@doc_params()
def umap(
    adata: AnnData, *, use_rep: str, n_neighbors: int = 15, min_dist: float = 0.3, n_epochs: int | None = None,
    seed: int = 0, key_added: str | None = None, copy: bool = False,
) -> AnnData | None:
    """2-D UMAP (umap-learn) of an embedding.

    Parameters
    ----------
    {doc_adata}
    {doc_use_rep}
    {doc_n_neighbors}
    min_dist
        UMAP's minimum distance between embedded points.
    n_epochs
        Optimisation epochs (``None`` = umap-learn's default).
    {doc_seed}
    key_added
        ``None``: ``obsm['X_umap']`` and ``uns['umap']`` (scanpy's keys); else ``obsm[key_added]`` and
        ``uns[key_added]``.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obsm['X_umap' | key_added]`` : float32 (n_cells, 2)
        UMAP coordinates.
    ``adata.uns['umap' | key_added]`` : dict
        ``params``: ``a``, ``b`` (as scanpy), ``n_neighbors``, ``min_dist``, ``use_rep``, ``random_state``.
    """
    import umap as umap_learn  # numba compile on first import; keep it lazy

    adata = adata.copy() if copy else adata
    key_obsm, key_uns = ("X_umap", "umap") if key_added is None else (key_added, key_added)
    X = get_rep(adata, use_rep)
    k = min(n_neighbors, adata.n_obs - 1)
    reducer = umap_learn.UMAP(n_neighbors=k, min_dist=min_dist, n_epochs=n_epochs, random_state=seed, n_jobs=1)
    adata.obsm[key_obsm] = reducer.fit_transform(X).astype(np.float32)
    adata.uns[key_uns] = {"params": {"a": float(reducer._a), "b": float(reducer._b), "n_neighbors": k,
                                     "min_dist": min_dist, "use_rep": use_rep, "random_state": seed}}
    return adata if copy else None
