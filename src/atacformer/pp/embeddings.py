"""Array-level TF-IDF, LSI and spectral embeddings of a cells × features count matrix.

These are the algorithms behind the ``tl.lsi`` / ``tl.spectral`` baselines and behind the priors that
pretraining computes from its training cells (contrastive neighbours, the SVD-initialised bin table):

- :func:`tfidf` is Signac's ``RunTFIDF`` method 1: ``log1p(tf · idf · 1e4)`` with ``tf = x / rowsum``
  and ``idf = n_cells / colsum``.
- :func:`lsi_embedding` is Signac/ArchR LSI: TF-IDF, truncated SVD, embeddings ``U·S`` standardised per
  component, the first component dropped when |Pearson r| with log sequencing depth exceeds 0.75.
- :func:`spectral_embedding` calls ``snapatac2.tl.spectral`` when ``snapatac2`` imports; otherwise it
  runs the same algorithm here (SnapATAC2 2.x matrix-free cosine spectral embedding): binarise, weight
  features by ``idf = log(n / (1 + count))``, L2-normalise cells, similarity ``W = XXᵀ`` without its
  diagonal, eigenvectors of ``D^-1/2 W D^-1/2`` scaled by sqrt(eigenvalue).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.decomposition import TruncatedSVD

log = logging.getLogger(__name__)
_said_no_snapatac2 = False  # say once per process that the built-in spectral embedding is used


def count_matrix(X) -> sp.csr_matrix:
    """A count matrix as float64 CSR.

    Parameters
    ----------
    X
        Cells × features counts (dense or sparse).

    Returns
    -------
    The CSR matrix; negative entries are a ValueError.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    if X.nnz and X.data.min() < 0:
        raise ValueError("a non-negative count matrix is needed (found negative entries in X)")
    return X


def tfidf(X, *, scale_factor: float = 1e4) -> sp.csr_matrix:
    """Signac log TF-IDF of a cells × features count matrix.

    Parameters
    ----------
    X
        Cells × features counts (dense or sparse).
    scale_factor
        Multiplier inside the logarithm (Signac's default 1e4).

    Returns
    -------
    CSR matrix of the same shape; rows and columns with zero sum stay zero.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    rs = np.asarray(X.sum(1)).ravel()
    cs = np.asarray(X.sum(0)).ravel()
    idf = np.divide(X.shape[0], cs, out=np.zeros_like(cs), where=cs > 0)
    tf = sp.diags(np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 0)) @ X
    out = (tf @ sp.diags(idf)).tocsr()
    out.data = np.log1p(out.data * scale_factor)
    return out


def lsi_embedding(X, *, n_comps: int = 30, depth_cor: float = 0.75, seed: int = 0) -> tuple[np.ndarray, dict]:
    """LSI (TF-IDF + truncated SVD, Signac/ArchR style) of a cells × features count matrix.

    Parameters
    ----------
    X
        Cells × features counts; features open in no cell are ignored.
    n_comps
        Number of components returned.
    depth_cor
        Drop the first component when its |Pearson r| with log depth exceeds this.
    seed
        Seed of the randomized SVD.

    Returns
    -------
    ``(embedding, info)``: float32 (n_cells, ≤ n_comps) standardised components, and a dict with
    ``depth_cor`` (r of each SVD component with log depth), ``dropped_first`` and ``n_features``.
    """
    X = count_matrix(X)
    used = np.asarray((X > 0).sum(0)).ravel() > 0
    T = tfidf(X[:, used])
    k = min(n_comps + 1, min(T.shape) - 1)
    if k < 2:
        raise ValueError(f"LSI needs at least 3 cells and 3 open features, got {T.shape}")
    emb = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed).fit_transform(T)  # U·S
    depth = np.log1p(np.asarray(X.sum(1)).ravel())
    r = np.array([np.corrcoef(emb[:, j], depth)[0, 1] if emb[:, j].std() > 0 else 0.0 for j in range(k)])
    drop_first = bool(abs(r[0]) > depth_cor)
    emb = emb[:, 1:] if drop_first else emb[:, : k - 1]
    emb = (emb - emb.mean(0)) / np.maximum(emb.std(0), 1e-12)
    info = {"depth_cor": r.tolist(), "dropped_first": drop_first, "n_features": int(used.sum())}
    return emb.astype(np.float32), info


def _spectral_matrix_free(X: sp.csr_matrix, n_comps: int, seed: int, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors·sqrt(eigenvalue)) of the normalised cosine similarity graph."""
    B = (X > 0).astype(np.float64)
    count = np.asarray(B.sum(0)).ravel()
    B = (B @ sp.diags(np.log(B.shape[0] / (1 + count)))).tocsr()
    norm = np.sqrt(np.asarray(B.multiply(B).sum(1)).ravel())
    B = sp.diags(np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)) @ B
    self_sim = np.asarray(B.multiply(B).sum(1)).ravel()  # 1 for non-empty cells
    D = np.asarray(B @ np.asarray(B.sum(0)).ravel()).ravel() - self_sim  # degree without self-loop
    D = np.maximum(D, 1e-12)
    Bn = (sp.diags(1 / np.sqrt(D)) @ B).tocsr()
    diag = self_sim / D

    def matvec(v):  # (D^-1/2 (W - diag) D^-1/2) v without forming W
        v = np.ravel(v)
        return Bn @ (Bn.T @ v) - diag * v

    n = X.shape[0]
    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    evals, evecs = eigsh(op, k=min(n_comps, n - 2), v0=v0, tol=tol)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    keep = evals > 0
    return evals[keep], evecs[:, keep] * np.sqrt(evals[keep])


def _snapatac2_spectral(X: sp.csr_matrix, n_comps: int, seed: int):
    """(embedding, eigenvalues, implementation) from ``snapatac2.tl.spectral``, or None if it is not installed."""
    global _said_no_snapatac2
    try:
        import snapatac2 as snap
    except ImportError:
        if not _said_no_snapatac2:
            log.info("snapatac2 is not installed; the spectral baseline uses the built-in re-implementation")
            _said_no_snapatac2 = True
        return None
    from anndata import AnnData

    tmp = AnnData(X=X.astype(np.float32).tocsr())
    snap.tl.spectral(tmp, n_comps=n_comps, features=None, random_state=seed)
    evals = np.asarray(tmp.uns.get("spectral_eigenvalue", []))
    return np.asarray(tmp.obsm["X_spectral"]), evals, f"snapatac2 {snap.__version__} tl.spectral"


def spectral_embedding(X, *, n_comps: int = 30, seed: int = 0, use_snapatac2: bool = True,
                       tol: float = 0.0) -> tuple[np.ndarray, dict]:
    """SnapATAC2 spectral embedding of a cells × features count matrix.

    Parameters
    ----------
    X
        Cells × features counts (binarised here); features open in no cell are ignored.
    n_comps
        Number of eigenvectors computed (those with a positive eigenvalue are kept).
    seed
        Seed of the eigen-solver's start vector.
    use_snapatac2
        Call ``snapatac2.tl.spectral`` when it imports (else, or when false, the built-in version).
    tol
        Relative accuracy of the built-in eigen-solver (0 = machine precision; ``1e-4`` is several times
        faster on thousands of long cells and enough for a neighbour graph).

    Returns
    -------
    ``(embedding, info)``: float32 (n_cells, ≤ n_comps), and a dict with ``implementation`` (which code
    produced it) and ``eigenvalues``.
    """
    X = count_matrix(X)
    X = X[:, np.asarray((X > 0).sum(0)).ravel() > 0]
    if min(X.shape) < 3:
        raise ValueError(f"the spectral embedding needs at least 3 cells and 3 open features, got {X.shape}")
    found = _snapatac2_spectral(X, n_comps, seed) if use_snapatac2 else None
    if found is None:
        evals, emb = _spectral_matrix_free(X, n_comps, seed, tol)
        found = (emb, evals, "atacformer re-implementation of SnapATAC2 spectral")
    emb, evals, impl = found
    return emb.astype(np.float32), {"implementation": impl, "eigenvalues": np.asarray(evals, dtype=float).tolist()}
