"""Baselines for RNA–ATAC alignment and RNA imputation (the yardsticks of CRAFT).

- :func:`gene_activity`: ATAC counts summed over each gene's body ± 2 kb (Signac ``GeneActivity`` style),
  from the package's gene annotation of the data's genome.
- :func:`fit_lsi` / :func:`fit_pca`: TF-IDF + SVD of ATAC and PCA of log-normalised RNA, fitted on
  training cells and applied to new ones (no information from held-out cells).
- :func:`fit_cca`: regularised CCA between two paired representations (ATAC LSI, RNA PCA).
- :func:`knn_impute`: mean RNA of the nearest training cells in ATAC space; :func:`ridge_impute`:
  ridge regression from ATAC TF-IDF to RNA (dual form, penalty chosen on held-out training cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.extmath import randomized_svd

from ..genome import get_genome
from ..io.regions import parse_regions
from ..metrics.alignment import pearson_per_gene


# ------------------------------------------------------------------------------------------ gene activity
def _gene_table(genome, genes) -> pd.DataFrame:
    table = get_genome(genome).genes()
    table = table.assign(length=table["end"] - table["start"])
    table = table.sort_values("length", ascending=False).drop_duplicates("gene")  # longest record per symbol
    if genes is not None:
        table = table[table["gene"].isin(set(map(str, genes)))]
    if table.empty:
        raise ValueError(f"none of the requested genes is in the {genome} gene annotation")
    return table.sort_values(["chrom", "start"]).reset_index(drop=True)


def _overlaps(r_start: np.ndarray, r_end: np.ndarray, g_start: np.ndarray, g_end: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(region index, gene index) pairs of overlapping half-open intervals (one chromosome)."""
    order = np.argsort(r_start, kind="stable")
    s, e = r_start[order], r_end[order]
    width = int((e - s).max()) if len(s) else 0
    lo = np.searchsorted(s, g_start - width, side="left")
    hi = np.searchsorted(s, g_end, side="left")  # regions starting before the gene ends
    rows, cols = [], []
    for j in np.flatnonzero(hi > lo):
        cand = np.arange(lo[j], hi[j])
        cand = cand[e[cand] > g_start[j]]
        rows.append(order[cand])
        cols.append(np.full(cand.size, j))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def gene_activity(atac: ad.AnnData, *, genome: str | None = None, genes=None, upstream: int = 2000,
                  downstream: int = 2000) -> ad.AnnData:
    """Gene-activity scores: per cell, the ATAC counts of all regions overlapping each gene's body
    extended by ``upstream`` / ``downstream`` bp (strand-aware).

    Parameters
    ----------
    atac
        Cells × regions (peaks or bins) counts; regions from ``var`` chrom/start/end or ``chr1:100-600`` names.
    genome
        Genome whose gene annotation is used; default ``atac.uns['genome']``.
    genes
        Restrict to these gene symbols (e.g. the RNA ``var_names``); default all annotated genes.
    upstream, downstream
        Extension of each gene body in bp (Signac's default is 2 kb upstream only).

    Returns
    -------
    New AnnData cells × genes (float32 CSR), ``obs`` copied, ``var``: chrom, start, end, strand, n_regions.
    """
    genome = genome or atac.uns.get("genome")
    if genome is None:
        raise ValueError("gene_activity needs genome= (the data has no uns['genome'])")
    table = _gene_table(genome, genes)
    chrom, start, end = parse_regions(atac.var, what="ATAC data")
    minus = table["strand"].to_numpy() == "-"
    g_start = table["start"].to_numpy() - np.where(minus, downstream, upstream)
    g_end = table["end"].to_numpy() + np.where(minus, upstream, downstream)
    rows, cols = [], []
    for c in np.unique(table["chrom"].to_numpy()):
        r = np.flatnonzero(chrom == c)
        g = np.flatnonzero(table["chrom"].to_numpy() == c)
        if r.size:
            ri, gi = _overlaps(start[r], end[r], g_start[g], g_end[g])
            rows.append(r[ri])
            cols.append(g[gi])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    M = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(atac.n_vars, len(table)))
    X = (sp.csr_matrix(atac.X, dtype=np.float32) @ M).tocsr()
    var = table[["chrom", "start", "end", "strand"]].assign(n_regions=np.asarray(M.sum(0)).ravel().astype(int))
    var.index = table["gene"].astype(str).to_numpy()
    return ad.AnnData(X=X, obs=atac.obs.copy(), var=var)


# ------------------------------------------------------------------------------------------ projections
def log_normalize(X, *, scale_factor: float = 1e4) -> np.ndarray:
    """Dense log1p(counts / library size · scale_factor) of a cells × genes matrix (empty cells stay 0)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    lib = np.asarray(X.sum(1)).ravel()
    out = (sp.diags(np.divide(scale_factor, lib, out=np.zeros_like(lib), where=lib > 0)) @ X).toarray()
    return np.log1p(out)


@dataclass
class LSI:
    """TF-IDF (idf of the training cells) + truncated SVD, standardised as in :func:`atacformer.tl.lsi`."""

    features: np.ndarray  # (F,) columns used (non-empty in training)
    idf: np.ndarray  # (F,)
    components: np.ndarray  # (k, F) SVD loadings
    keep: slice  # components kept (the first is dropped when it tracks depth)
    mean: np.ndarray
    std: np.ndarray

    def tfidf(self, X) -> sp.csr_matrix:
        """Log TF-IDF of new cells with the training idf (cells × used features)."""
        X = sp.csr_matrix(X, dtype=np.float64)[:, self.features]
        rs = np.asarray(X.sum(1)).ravel()
        out = (sp.diags(np.divide(1.0, rs, out=np.zeros_like(rs), where=rs > 0)) @ X @ sp.diags(self.idf)).tocsr()
        out.data = np.log1p(out.data * 1e4)
        return out

    def transform(self, X) -> np.ndarray:
        """(cells, k') standardised LSI coordinates of cells × features counts."""
        emb = np.asarray(self.tfidf(X) @ self.components.T)[:, self.keep]
        return ((emb - self.mean) / self.std).astype(np.float32)


def fit_lsi(X, *, n_comps: int = 30, depth_cor: float = 0.75, seed: int = 0) -> LSI:
    """Fit :class:`LSI` on training cells × features counts (``n_comps`` + 1 SVD components)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    cs = np.asarray(X.sum(0)).ravel()
    features = np.flatnonzero(cs > 0)
    lsi = LSI(features, X.shape[0] / cs[features], np.zeros(0), slice(None), np.zeros(0), np.ones(1))
    T = lsi.tfidf(X)
    svd = TruncatedSVD(n_components=min(n_comps + 1, min(T.shape) - 1), n_iter=7, random_state=seed).fit(T)
    lsi.components = svd.components_
    emb = np.asarray(T @ svd.components_.T)
    depth = np.log1p(np.asarray(X.sum(1)).ravel())
    drop = abs(np.corrcoef(emb[:, 0], depth)[0, 1]) > depth_cor
    lsi.keep = slice(1, None) if drop else slice(0, emb.shape[1] - 1)
    lsi.mean, lsi.std = emb[:, lsi.keep].mean(0), np.maximum(emb[:, lsi.keep].std(0), 1e-12)
    return lsi


@dataclass
class PCA:
    """Per-gene z-score (training mean/sd, clipped at ±10) + PCA of log-normalised values."""

    mean: np.ndarray  # (G,)
    std: np.ndarray  # (G,)
    components: np.ndarray  # (k, G)

    def scale(self, Y: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(Y) - self.mean) / self.std, -10, 10)

    def transform(self, Y: np.ndarray) -> np.ndarray:
        """(cells, k) PCA coordinates of log-normalised cells × genes values."""
        return (self.scale(Y) @ self.components.T).astype(np.float32)


def fit_pca(Y: np.ndarray, *, n_comps: int = 30, seed: int = 0) -> PCA:
    """Fit :class:`PCA` on training log-normalised cells × genes values."""
    Y = np.asarray(Y, dtype=np.float64)
    pca = PCA(Y.mean(0), np.maximum(Y.std(0), 1e-8), np.zeros(0))
    Z = pca.scale(Y)
    _, _, vt = randomized_svd(Z - Z.mean(0), min(n_comps, *Z.shape), n_iter=7, random_state=seed)
    pca.components = vt
    return pca


@dataclass
class CCA:
    """Canonical directions of two paired representations; variates weighted by their correlation."""

    mean_x: np.ndarray
    mean_y: np.ndarray
    wx: np.ndarray  # (d_x, k)
    wy: np.ndarray  # (d_y, k)
    corr: np.ndarray  # (k,) canonical correlations on the training pairs

    def transform_x(self, x) -> np.ndarray:
        return ((np.asarray(x) - self.mean_x) @ self.wx * self.corr).astype(np.float32)

    def transform_y(self, y) -> np.ndarray:
        return ((np.asarray(y) - self.mean_y) @ self.wy * self.corr).astype(np.float32)


def _inv_sqrt(C: np.ndarray, reg: float) -> np.ndarray:
    C = C + reg * np.trace(C) / len(C) * np.eye(len(C))
    w, v = np.linalg.eigh(C)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def fit_cca(x: np.ndarray, y: np.ndarray, *, n_comps: int = 20, reg: float = 1e-3) -> CCA:
    """Regularised CCA of paired rows ``x`` (n, d_x) and ``y`` (n, d_y) (closed form, whitening + SVD)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"CCA needs paired rows, got {len(x)} and {len(y)}")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    n = len(x) - 1
    ix, iy = _inv_sqrt(xc.T @ xc / n, reg), _inv_sqrt(yc.T @ yc / n, reg)
    u, s, vt = np.linalg.svd(ix @ (xc.T @ yc / n) @ iy)
    k = min(n_comps, len(s))
    return CCA(mx, my, ix @ u[:, :k], iy @ vt[:k].T, s[:k])


# ------------------------------------------------------------------------------------------ imputation
def knn_impute(ref_X: np.ndarray, ref_Y: np.ndarray, query_X: np.ndarray, *, n_neighbors: int = 15) -> np.ndarray:
    """(n_query, G) mean of ``ref_Y`` over each query cell's ``n_neighbors`` nearest reference cells
    (Euclidean in the ``ref_X`` / ``query_X`` space, e.g. ATAC LSI)."""
    k = min(n_neighbors, len(ref_X))
    idx = NearestNeighbors(n_neighbors=k).fit(ref_X).kneighbors(query_X, return_distance=False)  # (n, k)
    return np.asarray(ref_Y)[idx].mean(1)


def _centered_kernels(A: sp.spmatrix, B: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Linear kernels of centred features without densifying them: K (n_A, n_A) and K_BA (n_B, n_A)."""
    K = np.asarray((A @ A.T).todense())
    Kq = np.asarray((B @ A.T).todense())
    col = K.mean(0)
    Kc = K - col[None] - col[:, None] + col.mean()
    Kqc = Kq - col[None] - Kq.mean(1, keepdims=True) + col.mean()
    return Kc, Kqc


def _ridge_predict(Kc: np.ndarray, Kqc: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """Kernel ridge predictions: Kqc (Kc + alpha I)^-1 (Y - mean) + mean (Cholesky)."""
    mean = Y.mean(0)
    factor = cho_factor(Kc + alpha * np.eye(len(Kc)))
    return Kqc @ cho_solve(factor, Y - mean) + mean


def ridge_impute(ref_T: sp.spmatrix, ref_Y: np.ndarray, query_T: sp.spmatrix, *, alpha: float | None = None,
                 seed: int = 0, n_select: int = 3000) -> tuple[np.ndarray, float]:
    """Ridge regression from features (e.g. ATAC TF-IDF, cells × features) to ``ref_Y`` (cells × genes),
    solved in the dual (kernel) form. ``alpha=None`` picks the penalty from a grid (relative to the mean
    kernel diagonal) by mean per-gene Pearson on a random third of (at most ``n_select``) reference cells,
    fitted on the other two thirds.

    Returns (predictions (n_query, G), alpha used)."""
    ref_T, query_T = sp.csr_matrix(ref_T), sp.csr_matrix(query_T)
    Y = np.asarray(ref_Y, dtype=np.float64)
    if alpha is None:
        rng = np.random.default_rng(seed)
        pick = rng.permutation(ref_T.shape[0])[:n_select]
        fit, held = pick[len(pick) // 3:], pick[: len(pick) // 3]
        Kc, Kqc = _centered_kernels(ref_T[fit], ref_T[held])
        grid = [f * np.trace(Kc) / len(Kc) for f in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)]
        score = [np.nanmean(pearson_per_gene(_ridge_predict(Kc, Kqc, Y[fit], a), Y[held])) for a in grid]
        best = int(np.nanargmax(score))
        alpha = float(grid[best] / np.trace(Kc) * len(Kc))  # relative to the mean kernel diagonal
    Kc, Kqc = _centered_kernels(ref_T, query_T)
    return _ridge_predict(Kc, Kqc, Y, alpha * np.trace(Kc) / len(Kc)), alpha
