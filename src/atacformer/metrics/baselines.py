"""Baseline embeddings on the same cells × bins matrix: TF-IDF + LSI and SnapATAC2 spectral.

- :func:`lsi` follows Signac (``RunTFIDF`` method 1 + ``RunSVD``): ``log1p(tf · idf · 1e4)`` with
  ``tf = x / rowsum`` and ``idf = n_cells / colsum``; truncated SVD; embeddings ``U·S`` standardised per
  component; the first component is dropped when |Pearson r| with log sequencing depth exceeds 0.75.
- :func:`spectral` calls ``snapatac2.tl.spectral`` when ``snapatac2`` imports; otherwise it runs the
  same algorithm here (SnapATAC2 2.x matrix-free cosine spectral embedding): binarise, weight features
  by ``idf = log(n / (1 + count))``, L2-normalise cells, similarity ``W = XXᵀ`` without its diagonal,
  eigenvectors of ``D^-1/2 W D^-1/2``, scaled by sqrt(eigenvalue). ``uns['spectral']['implementation']``
  says which one ran.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.decomposition import TruncatedSVD

log = logging.getLogger(__name__)


def _counts(adata: AnnData) -> sp.csr_matrix:
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    if X.nnz and X.data.min() < 0:
        raise ValueError("baselines need a non-negative count matrix in adata.X")
    return X


def tfidf(X: sp.spmatrix, *, scale_factor: float = 1e4) -> sp.csr_matrix:
    """Signac log TF-IDF of a cells × features count matrix (rows/columns with zero sum stay zero)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    rs = np.asarray(X.sum(1)).ravel()
    cs = np.asarray(X.sum(0)).ravel()
    idf = np.divide(X.shape[0], cs, out=np.zeros_like(cs), where=cs > 0)
    tf = sp.diags(np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 0)) @ X
    out = (tf @ sp.diags(idf)).tocsr()
    out.data = np.log1p(out.data * scale_factor)
    return out


def lsi(
    adata: AnnData, *, n_comps: int = 30, depth_cor: float = 0.75, seed: int = 0, key_added: str = "X_lsi"
) -> AnnData:
    """TF-IDF + truncated SVD (Signac/ArchR style) into ``obsm[key_added]``; details in ``uns[key_added]``."""
    X = _counts(adata)
    used = np.asarray((X > 0).sum(0)).ravel() > 0
    T = tfidf(X[:, used])
    k = min(n_comps + 1, min(T.shape) - 1)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
    emb = svd.fit_transform(T)  # (n_cells, k) = U·S
    depth = np.log1p(np.asarray(X.sum(1)).ravel())
    r = np.array([np.corrcoef(emb[:, j], depth)[0, 1] if emb[:, j].std() > 0 else 0.0 for j in range(k)])
    drop_first = bool(abs(r[0]) > depth_cor)
    emb = emb[:, 1:] if drop_first else emb[:, : k - 1]
    emb = (emb - emb.mean(0)) / np.maximum(emb.std(0), 1e-12)
    adata.obsm[key_added] = emb.astype(np.float32)
    adata.uns[key_added] = {"depth_cor": r.tolist(), "dropped_first": drop_first, "n_features": int(used.sum())}
    return adata


def _spectral_matrix_free(X: sp.csr_matrix, n_comps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors·sqrt(eigenvalue)) of the normalised cosine similarity graph."""
    B = (X > 0).astype(np.float64)
    count = np.asarray(B.sum(0)).ravel()
    idf = np.log(B.shape[0] / (1 + count))
    B = (B @ sp.diags(idf)).tocsr()
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
    evals, evecs = eigsh(op, k=min(n_comps, n - 2), v0=v0)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    keep = evals > 0
    return evals[keep], evecs[:, keep] * np.sqrt(evals[keep])


def spectral(
    adata: AnnData, *, n_comps: int = 30, seed: int = 0, key_added: str = "X_spectral", use_snapatac2: bool = True
) -> AnnData:
    """SnapATAC2 spectral embedding into ``obsm[key_added]``; ``uns[key_added]['implementation']`` says
    whether ``snapatac2`` itself or the built-in re-implementation produced it."""
    X = _counts(adata)
    used = np.asarray((X > 0).sum(0)).ravel() > 0
    impl = "atacformer re-implementation of SnapATAC2 spectral"
    emb = None
    if use_snapatac2:
        try:
            import snapatac2 as snap

            tmp = AnnData(X=X[:, used].astype(np.float32).tocsr())
            snap.tl.spectral(tmp, n_comps=n_comps, features=None, random_state=seed)
            emb = np.asarray(tmp.obsm["X_spectral"])
            evals = np.asarray(tmp.uns.get("spectral_eigenvalue", []))
            impl = f"snapatac2 {snap.__version__} tl.spectral"
        except ImportError:
            log.info("snapatac2 is not installed; using the built-in spectral embedding")
    if emb is None:
        evals, emb = _spectral_matrix_free(X[:, used], n_comps, seed)
    adata.obsm[key_added] = emb.astype(np.float32)
    adata.uns[key_added] = {"implementation": impl, "eigenvalues": np.asarray(evals, dtype=float).tolist()}
    return adata
