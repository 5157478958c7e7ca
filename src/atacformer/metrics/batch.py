"""scIB-style integration metrics, implemented here (``scib`` is not reliably installable).

Definitions follow Luecken et al. 2022 (scIB):

- :func:`ilisi`: integration LISI (Korsunsky et al. 2019): per cell, the inverse Simpson index of the
  batch labels among its neighbours, weighted by a Gaussian kernel calibrated to a perplexity; the
  median, scaled to [0, 1] by ``(LISI - 1) / (n_batches - 1)``.
- :func:`kbet`: kBET acceptance rate (Büttner et al. 2019): fraction of neighbourhoods whose batch
  composition passes a χ² test against the global composition.
- :func:`batch_asw`: 1 − |silhouette| of batch labels, within each cell type, averaged over types.
- :func:`celltype_asw`: (silhouette of cell-type labels + 1) / 2.
- :func:`graph_connectivity`: per cell type, the fraction of its cells in the largest connected
  component of the kNN graph restricted to that type; averaged over types.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.stats import chi2
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.neighbors import NearestNeighbors


def _knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the ``k`` nearest other cells: (n, k) each."""
    k = min(k, len(X) - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return dist[:, 1:], idx[:, 1:]


def _perplexity_weights(dist: np.ndarray, perplexity: float, *, tol: float = 1e-5, n_iter: int = 50) -> np.ndarray:
    """Row-normalised Gaussian weights exp(-beta d) with beta bisected so the entropy is log(perplexity)."""
    n = len(dist)
    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    target = np.log(perplexity)
    d = dist - dist[:, :1]  # shift for stability; weights are invariant to it
    for _ in range(n_iter):
        P = np.exp(-d * beta[:, None])
        P /= P.sum(1, keepdims=True)
        H = -(P * np.log(np.maximum(P, 1e-300))).sum(1)
        diff = H - target
        if np.all(np.abs(diff) < tol):
            break
        up = diff > 0  # entropy too high → sharper kernel
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
                        np.where(np.isinf(lo), beta / 2, (beta + lo) / 2))
    return P


def simpson_lisi(weights: np.ndarray, neighbour_codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Inverse Simpson index 1 / Σ_b p_b² per cell.

    Parameters
    ----------
    weights, neighbour_codes
        (n, k) neighbour weights and their integer codes.
    n_codes
        Number of codes.

    Returns
    -------
    (n,) inverse Simpson index.
    """
    p = np.zeros((len(weights), n_codes))
    np.add.at(p, (np.repeat(np.arange(len(weights)), weights.shape[1]), neighbour_codes.ravel()), weights.ravel())
    p /= p.sum(1, keepdims=True)
    return 1.0 / (p**2).sum(1)


def lisi(X: np.ndarray, labels, *, perplexity: float = 30) -> np.ndarray:
    """Per-cell LISI (Harmony's ``compute_lisi``: 3·perplexity neighbours, Gaussian weights).

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    labels
        (n_cells,) batch or label of each cell.
    perplexity
        Effective neighbourhood size.

    Returns
    -------
    (n_cells,) inverse Simpson index of the labels around each cell, in [1, number of labels].
    """
    codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)[1]
    perplexity = min(perplexity, (len(X) - 1) / 3)
    dist, idx = _knn(np.asarray(X, dtype=np.float64), int(3 * perplexity))
    return simpson_lisi(_perplexity_weights(dist, perplexity), codes[idx], codes.max() + 1)


def ilisi(X: np.ndarray, batch, *, perplexity: float = 30, scale: bool = True) -> float:
    """Integration LISI: how many batches are present around each cell, median over cells.

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    batch
        (n_cells,) batch of each cell (at least two batches).
    perplexity
        Effective neighbourhood size.
    scale
        Scale to [0, 1] by ``(LISI − 1) / (n_batches − 1)``.

    Returns
    -------
    iLISI; scaled: 0 = one batch per neighbourhood, 1 = batches perfectly mixed.
    """
    n_batches = len(np.unique(np.asarray(batch).astype(str)))
    if n_batches < 2:
        raise ValueError("iLISI needs at least two batches")
    med = float(np.median(lisi(X, batch, perplexity=perplexity)))
    return (med - 1) / (n_batches - 1) if scale else med


def kbet_pvalues(neighbour_codes: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """χ² p-value of each neighbourhood's batch counts against the global frequencies.

    Parameters
    ----------
    neighbour_codes
        (n, k) batch codes of each cell's neighbours.
    freq
        (n_batches,) global batch frequencies.

    Returns
    -------
    (n,) p-values.
    """
    n, k = neighbour_codes.shape
    counts = np.zeros((n, len(freq)))
    np.add.at(counts, (np.repeat(np.arange(n), k), neighbour_codes.ravel()), 1.0)
    expected = k * freq[None, :]
    stat = ((counts - expected) ** 2 / expected).sum(1)
    return chi2.sf(stat, df=len(freq) - 1)


def kbet(X: np.ndarray, batch, *, labels=None, n_neighbors: int | None = None, alpha: float = 0.05) -> float:
    """kBET acceptance rate: the share of neighbourhoods whose batch mix passes a χ² test against the
    global mix.

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    batch
        (n_cells,) batch of each cell.
    labels
        Compute within each label and average (as scIB); labels seen in one batch only are skipped.
    n_neighbors
        Neighbourhood size (default a quarter of the mean batch size, clipped to [5, 50]).
    alpha
        Significance level of the test.

    Returns
    -------
    Acceptance rate in [0, 1]; 1 = every neighbourhood looks like the global batch mix.
    """
    X = np.asarray(X, dtype=np.float64)
    batch = np.asarray(batch).astype(str)
    groups = [np.arange(len(X))] if labels is None else [
        np.flatnonzero(np.asarray(labels).astype(str) == g) for g in np.unique(np.asarray(labels).astype(str))
    ]
    rates = []
    for g in groups:
        bs, codes = np.unique(batch[g], return_inverse=True)
        if len(bs) < 2 or len(g) < 4:
            continue
        freq = np.bincount(codes) / len(codes)
        kk = n_neighbors or int(np.clip(len(g) / len(bs) / 4, 5, 50))
        _, idx = _knn(X[g], kk)
        rates.append(float((kbet_pvalues(codes[idx], freq) >= alpha).mean()))
    if not rates:
        raise ValueError("kBET needs at least one group with two batches")
    return float(np.mean(rates))


def batch_asw(X: np.ndarray, batch, labels) -> float:
    """scIB batch ASW: mean over cell types of mean(1 − |silhouette of the batches|).

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    batch, labels
        (n_cells,) batch and cell type of each cell.

    Returns
    -------
    Batch ASW in [0, 1]; 1 = batches indistinguishable within each cell type.
    """
    X = np.asarray(X, dtype=np.float64)
    batch = np.asarray(batch).astype(str)
    labels = np.asarray(labels).astype(str)
    scores = []
    for g in np.unique(labels):
        m = labels == g
        if len(np.unique(batch[m])) < 2 or m.sum() < 3:
            continue
        scores.append(float(np.mean(1 - np.abs(silhouette_samples(X[m], batch[m])))))
    if not scores:
        raise ValueError("batch ASW needs at least one cell type present in two batches")
    return float(np.mean(scores))


def celltype_asw(X: np.ndarray, labels) -> float:
    """scIB cell-type ASW: (silhouette of the labels + 1) / 2.

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    labels
        (n_cells,) cell type of each cell.

    Returns
    -------
    Cell-type ASW in [0, 1]; 1 = compact, well separated cell types.
    """
    return float((silhouette_score(np.asarray(X, dtype=np.float64), np.asarray(labels).astype(str)) + 1) / 2)


def knn_graphs(X: np.ndarray, *, n_neighbors: int = 15) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The kNN graph of an embedding (Euclidean), as scanpy stores one.

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    n_neighbors
        Nearest other cells of each cell (the cell itself not counted).

    Returns
    -------
    ``(connectivities, distances)``, both (n, n) CSR: ``distances`` holds each cell's neighbours and their
    distances (not symmetric, as scanpy's); ``connectivities`` is the symmetric binary adjacency (an edge
    where either cell is among the other's neighbours).
    """
    X = np.asarray(X, dtype=np.float64)
    if len(X) < 2:
        raise ValueError(f"a kNN graph needs at least 2 cells, got {len(X)}")
    dist, idx = _knn(X, n_neighbors)
    n, k = idx.shape
    rows = np.repeat(np.arange(n), k)
    D = sp.csr_matrix((dist.ravel(), (rows, idx.ravel())), shape=(n, n))
    A = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(n, n))
    return ((A + A.T) > 0).astype(np.float64).tocsr(), D


def knn_graph(X: np.ndarray, *, n_neighbors: int = 15) -> sp.csr_matrix:
    """Symmetric binary kNN adjacency (n, n): the ``connectivities`` of :func:`knn_graphs`."""
    return knn_graphs(X, n_neighbors=n_neighbors)[0]


def graph_connectivity(X: np.ndarray, labels, *, n_neighbors: int = 15, graph: sp.spmatrix | None = None) -> float:
    """scIB graph connectivity: per cell type, the share of its cells in the largest connected component
    of the kNN graph restricted to that type; averaged over types.

    Parameters
    ----------
    X
        (n_cells, d) embedding (ignored when ``graph`` is given).
    labels
        (n_cells,) cell type of each cell.
    n_neighbors
        Neighbours of the kNN graph.
    graph
        A given (n, n) adjacency instead of the kNN graph of ``X``.

    Returns
    -------
    Graph connectivity in [0, 1]; 1 = every cell type forms one connected group.
    """
    labels = np.asarray(labels).astype(str)
    A = sp.csr_matrix(graph) if graph is not None else knn_graph(X, n_neighbors=n_neighbors)
    fractions = []
    for g in np.unique(labels):
        m = np.flatnonzero(labels == g)
        _, comp = connected_components(A[m][:, m], directed=False)
        fractions.append(np.bincount(comp).max() / len(m))
    return float(np.mean(fractions))
