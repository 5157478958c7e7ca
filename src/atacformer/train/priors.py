"""Unsupervised priors that :func:`~atacformer.train.pretrain` computes from the training cells (no labels):

* :func:`bin_open_counts` — in how many training cells each bin is open: the decoder's ``observed``
  bins and the closed:open ratio behind :func:`balanced_state_weights`;
* :func:`cell_neighbors` — each cell's nearest neighbours, for the contrastive views' augmentation;
* :func:`svd_bin_embeddings` — bin loadings of a truncated SVD of the TF-IDF matrix, to initialise the
  bin-ID table E1 from co-accessibility (a low-rank factorisation of the cells × bins matrix, as
  word2vec factorises a PMI matrix).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from ..pp import lsi_embedding, spectral_embedding, tfidf
from ..tokenize import Corpus

log = logging.getLogger(__name__)

NEIGHBOR_METHODS = ("tfidf", "lsi", "spectral")


def bin_open_counts(X: sp.spmatrix | None = None, corpora: Sequence[Corpus] = (), *,
                    n_bins: int) -> tuple[np.ndarray, int]:
    """(n_bins,) number of cells each bin is open in, and the number of cells: from a cells × global
    bins matrix ``X``, or by reading the ``bin_ids`` column of every shard of ``corpora``."""
    counts, n_cells = np.zeros(n_bins, dtype=np.int64), 0
    if X is not None:
        X = sp.csr_matrix(X)
        counts += np.bincount(X.indices[X.data > 0], minlength=n_bins)[:n_bins]
        n_cells += X.shape[0]
    for corpus in corpora:
        for shard in corpus.shards:
            col = pq.read_table(shard, columns=["bin_ids"]).column("bin_ids")
            ids = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.int64)
            if len(ids) and (ids.min() < 0 or ids.max() >= n_bins):
                raise ValueError(f"{shard}: bin ids outside the vocabulary's {n_bins} bins")
            counts += np.bincount(ids, minlength=n_bins)
            n_cells += len(col)
    return counts, n_cells


def balanced_state_weights(counts: np.ndarray, n_cells: int, n_decoder_bins: int) -> tuple[float, float, float]:
    """State weights (1, w, w) with w = closed pairs / open pairs over the decoder's bins, so closed and
    open (cell, bin) pairs weigh the same in the loss (sklearn's ``class_weight="balanced"`` for two
    classes). With ~100 open of 607k bins per cell, fixed small weights make "closed everywhere" optimal."""
    n_open = float(counts.sum())
    if n_open <= 0 or n_cells <= 0:
        raise ValueError("balanced state weights need at least one open (cell, bin) pair in the training cells")
    w = max(1.0, (n_cells * n_decoder_bins - n_open) / n_open)
    return (1.0, w, w)


def cell_neighbors(X: sp.spmatrix, k: int, *, method: str = "tfidf", n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """(n_cells, k) nearest neighbours of each cell (itself excluded) of a cells × bins matrix.

    ``method``: ``"tfidf"`` = cosine on Signac log TF-IDF profiles (:func:`~atacformer.pp.tfidf`);
    ``"lsi"`` = cosine on the LSI embedding
    (:func:`~atacformer.pp.lsi_embedding`, ``n_comps``); ``"spectral"`` = cosine on the SnapATAC2-style
    spectral embedding (:func:`~atacformer.pp.spectral_embedding`)."""
    if method not in NEIGHBOR_METHODS:
        raise ValueError(f"neighbour method must be one of {NEIGHBOR_METHODS}, got {method!r}")
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data[:] = 1.0
    X = X[:, np.flatnonzero(np.asarray(X.sum(axis=0)).ravel() > 0)]
    k = min(k, X.shape[0] - 1)
    if method == "tfidf":
        rep = tfidf(X)
    elif method == "lsi":
        rep, _ = lsi_embedding(X, n_comps=min(n_comps, X.shape[0] - 3, X.shape[1] - 2), seed=seed)
    else:  # exact: the cheaper set-up (tol 1e-4, 3 SVD iterations) lost ~0.1 fine-type ARI (RESULTS.md)
        n_comps = min(n_comps, X.shape[0] - 3, X.shape[1] - 2)
        rep, _ = spectral_embedding(X, n_comps=n_comps, seed=seed)
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(rep)
    return nn.kneighbors(return_distance=False)  # (n, k): without X, each point's neighbours exclude itself


def group_mixing(neighbors: np.ndarray, groups: np.ndarray) -> dict:
    """Per group: the share of its cells' neighbours (rows of ``neighbors``, a kNN graph over all cells) that
    belong to other groups, over the share expected if the groups were mixed at random (1 − n_g / n).
    About 1 = the group's cells mix with the others; 0 = the graph keeps the group apart (a batch effect)."""
    out = {}
    for g in np.unique(groups):
        members = groups == g
        expected = 1.0 - members.mean()
        out[g] = float((groups[neighbors[members]] != g).mean() / expected) if expected > 0 else 1.0
    return out


def separated_groups(neighbors: np.ndarray, groups: np.ndarray, *, min_mixing: float = 0.5) -> list:
    """The groups that a kNN graph over all cells (``neighbors``) keeps apart: :func:`group_mixing` below
    ``min_mixing`` (a batch effect), logged with every group's mixing."""
    mixing = group_mixing(neighbors, groups)
    log.info("mixing of the batch_key groups in the kNN graph (1 = mixed, 0 = apart): %s",
             ", ".join(f"{g}: {m:.2f}" for g, m in mixing.items()))
    return [g for g, m in mixing.items() if m < min_mixing]


def grouped_neighbors(X: sp.spmatrix, groups: np.ndarray, k: int, *, method: str = "tfidf", n_comps: int = 30,
                      seed: int = 0, within=None) -> np.ndarray:
    """(n_cells, k) nearest neighbours of each cell (:func:`cell_neighbors`): a cell of a group in ``within``
    (default: every group) among the cells of its own group, so that a view never borrows another sample's
    batch effect; a cell of any other group among the cells of all those other groups.

    A group of fewer than k + 1 cells repeats its neighbours to fill k columns (a cell alone is its own
    neighbour); groups of fewer than 8 cells use ``"tfidf"`` (too few for an embedding)."""
    X, groups = sp.csr_matrix(X), np.asarray(groups)
    within = np.unique(groups) if within is None else np.asarray(list(within), dtype=groups.dtype)
    out = np.empty((X.shape[0], k), dtype=np.int64)
    pooled = np.flatnonzero(~np.isin(groups, within))
    if len(pooled):
        _fill(out, pooled, X, k, method, n_comps, seed)
    for g in within:
        _fill(out, np.flatnonzero(groups == g), X, k, method, n_comps, seed)
    return out


def _fill(out: np.ndarray, members: np.ndarray, X: sp.csr_matrix, k: int, method: str, n_comps: int,
          seed: int) -> np.ndarray:
    """Rows ``members`` of ``out``: each member's k nearest neighbours among ``members`` (cycled to k columns)."""
    if len(members) == 1:
        out[members] = members[0]
        return out
    m = method if len(members) >= 8 else "tfidf"
    local = cell_neighbors(X[members], k, method=m, n_comps=n_comps, seed=seed)  # (n_g, min(k, n_g - 1))
    out[members] = members[local[:, np.arange(k) % local.shape[1]]]
    return out


def svd_bin_embeddings(X: sp.spmatrix, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(bins, vectors): the bins open in some cell of ``X`` (cells × global bins) and their (n, k)
    loadings ``V·sqrt(S)`` of a rank-``k`` truncated SVD of the Signac TF-IDF matrix, each dimension
    scaled to unit standard deviation (the scale of a default ``nn.Embedding`` row). Deterministic for
    a given ``seed``."""
    X = sp.csr_matrix(X)
    bins = np.flatnonzero(np.bincount(X.indices[X.data > 0], minlength=X.shape[1]) > 0)
    T = tfidf((X[:, bins] > 0).astype(np.float64))
    rank = min(k, min(T.shape) - 1)
    if rank < 1:
        raise ValueError(f"SVD initialisation needs at least 2 cells and 2 open bins, got {T.shape}")
    svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=7, random_state=seed).fit(T)
    vectors = np.zeros((len(bins), k), dtype=np.float32)
    vectors[:, :rank] = svd.components_.T * np.sqrt(svd.singular_values_)  # (n, rank)
    vectors[:, :rank] /= np.maximum(vectors[:, :rank].std(axis=0), 1e-12)
    log.info("E1 initialised from a rank-%d SVD of %d cells × %d bins", rank, *T.shape)
    return bins, vectors
