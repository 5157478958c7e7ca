"""Mutual nearest neighbours across batches (Haghverdi et al. 2018), and the MNN correction of an embedding.

:func:`mnn_pairs` finds cells of two batches that are each among the other's ``n_neighbors`` nearest
cells of that batch; :func:`mnn_shift` moves every cell of the other batches by a Gaussian-weighted mean of
the pair vectors (reference partner − own anchor) of the anchors near it, as ``mnnCorrect`` does.
No labels are used. Neighbour searches are chunked (scikit-learn brute force), never n × n in memory.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

from .._docs import doc_params

log = logging.getLogger(__name__)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length.

    Parameters
    ----------
    X
        (n, d) matrix.

    Returns
    -------
    (n, d) float64; zero rows stay zero.
    """
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _knn(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(n_queries, k) indices into ``data`` of the nearest cells by cosine."""
    return NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(data).kneighbors(
        queries, return_distance=False)


def mnn_pairs(X: np.ndarray, batch, *, n_neighbors: int = 10) -> np.ndarray:
    """Mutual nearest neighbours across batches (cosine).

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    batch
        (n_cells,) batch of each cell.
    n_neighbors
        Nearest cells searched in the other batch.

    Returns
    -------
    (n_pairs, 2) int64 cell indices (i, j) with ``batch[i] != batch[j]``, j among the ``n_neighbors``
    nearest cells of ``batch[j]`` to i and vice versa; each unordered pair appears once per direction.
    """
    X = unit_rows(X)
    batch = np.asarray(batch).astype(str)
    groups = {b: np.flatnonzero(batch == b) for b in np.unique(batch)}
    pairs = []
    for a, ia in groups.items():
        for b, ib in groups.items():
            if a >= b:
                continue
            ka, kb = min(n_neighbors, len(ib)), min(n_neighbors, len(ia))
            nn_ab = _knn(X[ib], X[ia], ka)  # (n_a, ka) positions in ib
            nn_ba = _knn(X[ia], X[ib], kb)  # (n_b, kb) positions in ia
            ab = sp.csr_matrix((np.ones(nn_ab.size), (np.repeat(np.arange(len(ia)), ka), nn_ab.ravel())),
                               shape=(len(ia), len(ib)))
            ba = sp.csr_matrix((np.ones(nn_ba.size), (nn_ba.ravel(), np.repeat(np.arange(len(ib)), kb))),
                               shape=(len(ia), len(ib)))
            rows, cols = ab.multiply(ba).nonzero()  # in both lists
            p = np.stack([ia[rows], ib[cols]], 1)
            pairs += [p, p[:, ::-1]]
    return np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), dtype=np.int64)


def mnn_shift(X: np.ndarray, batch, *, reference: str | None = None, n_neighbors: int = 20,
              chunk: int = 2048) -> tuple[np.ndarray, dict]:
    """MNN correction of an embedding matrix toward a reference batch (:func:`mnn_correct` on arrays).

    Cells are first scaled to unit length (cosine geometry). For each other batch, its MNN pairs with
    the reference give correction vectors ``x_ref − x_anchor``; each cell of that batch moves by their
    mean weighted with a Gaussian kernel on its distance to the anchors, bandwidth σ = the median
    correction-vector length (a scale taken from the data, no tuned constant). Reference cells stay
    put. A batch without MNN pairs with the reference is left uncorrected (logged).

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    batch
        (n_cells,) batch of each cell.
    reference
        Batch the others move toward (default: the largest).
    n_neighbors
        Neighbours searched for mutual nearest neighbours.
    chunk
        Cells corrected per block (bounds memory).

    Returns
    -------
    ``(corrected, facts)``: (n_cells, d) float32 unit vectors, and ``{"reference", "n_neighbors",
    "batches": {batch: {"pairs", "sigma"}}}``.
    """
    Xu = unit_rows(X)
    batch = np.asarray(batch).astype(str)
    names, counts = np.unique(batch, return_counts=True)
    ref = reference if reference is not None else str(names[np.argmax(counts)])
    if ref not in names:
        raise ValueError(f"reference batch {ref!r} is not among the batches {list(names)}")
    out, facts = Xu.copy(), {"reference": ref, "n_neighbors": n_neighbors, "batches": {}}
    for b in names:
        if b == ref:
            continue
        sel = np.flatnonzero((batch == b) | (batch == ref))
        local = mnn_pairs(Xu[sel], batch[sel], n_neighbors=n_neighbors)
        local = local[batch[sel][local[:, 0]] == b]  # (anchor in b, partner in ref)
        if not len(local):
            log.warning("mnn_shift: batch %r has no mutual neighbours in %r; left uncorrected", b, ref)
            facts["batches"][str(b)] = {"pairs": 0, "sigma": float("nan")}
            continue
        anchors, vectors = Xu[sel[local[:, 0]]], Xu[sel[local[:, 1]]] - Xu[sel[local[:, 0]]]  # (P, d)
        sigma = float(np.median(np.linalg.norm(vectors, axis=1)))
        sigma = sigma if sigma > 0 else 1.0
        cells = np.flatnonzero(batch == b)
        for start in range(0, len(cells), chunk):
            q = cells[start : start + chunk]
            d2 = np.maximum(2.0 - 2.0 * Xu[q] @ anchors.T, 0.0)  # (q, P) squared distance of unit vectors
            logw = -d2 / (2 * sigma**2)
            w = np.exp(logw - logw.max(axis=1, keepdims=True))  # stable: the nearest anchor has weight 1
            out[q] = Xu[q] + (w / w.sum(axis=1, keepdims=True)) @ vectors
        facts["batches"][str(b)] = {"pairs": len(local), "sigma": sigma}
        log.info("mnn_shift: %s → %s with %d pairs, sigma %.3f", b, ref, len(local), sigma)
    return out.astype(np.float32), facts


@doc_params()
def mnn_correct(adata: AnnData, *, use_rep: str, batch_key: str, reference_batch: str | None = None,
                n_neighbors: int = 20, key_added: str | None = None, copy: bool = False) -> AnnData | None:
    """MNN correction of any embedding (atacformer, LSI, spectral) across batches (see :func:`mnn_shift`).

    Parameters
    ----------
    {doc_adata}
    {doc_use_rep}
    {doc_batch_key}
    reference_batch
        Batch the others are moved toward (default: the largest).
    n_neighbors
        Neighbours searched in the other batch for mutual nearest neighbours (cosine).
    key_added
        ``obsm`` / ``uns`` key of the result (default ``use_rep + "_mnn"``).
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obsm[key_added]`` : float32 (n_cells, d)
        Corrected vectors (unit length).
    ``adata.uns[key_added]`` : dict
        ``reference``, ``n_neighbors`` and, per corrected batch, its MNN ``pairs`` and ``sigma``.
    """
    if use_rep not in adata.obsm:
        raise ValueError(f"adata.obsm has no {use_rep!r}")
    if batch_key not in adata.obs:
        raise ValueError(f"adata.obs has no {batch_key!r} column")
    adata = adata.copy() if copy else adata
    key = key_added or f"{use_rep}_mnn"
    adata.obsm[key], adata.uns[key] = mnn_shift(adata.obsm[use_rep], adata.obs[batch_key], reference=reference_batch,
                                                n_neighbors=n_neighbors)
    return adata if copy else None
