"""Cross-modal alignment and imputation metrics of paired cells (pure functions of arrays).

Row ``i`` of ``x`` (e.g. ATAC embeddings) and row ``i`` of ``y`` (RNA embeddings) are the same cell.

- :func:`foscttm`: fraction of samples closer than the true match (Liu et al. 2019; SCOT): for each
  ``x_i``, the share of the other ``n - 1`` cells ``y_j`` nearer to ``x_i`` than its partner ``y_i``; and
  the same from ``y`` to ``x``. 0 = perfect, 0.5 = random.
- :func:`retrieval`: top-k accuracy of finding the true partner among all cells of the other modality.
- :func:`pearson_per_gene` / :func:`pearson_per_cell`: Pearson r between imputed and measured values,
  per column / per row (NaN where either side is constant).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("euclidean", "cosine")


def _prepare(x, y, metric: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"need two (n, d) arrays of paired rows, got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("need at least 2 paired cells")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "cosine":  # cosine distance ranks as Euclidean distance of unit vectors
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    return x, y


def n_closer(x, y, *, metric: str = "euclidean", chunk: int = 2048) -> np.ndarray:
    """(n,) for each ``x_i``, how many ``y_j`` (j ≠ i) are strictly nearer to it than its partner ``y_i``."""
    x, y = _prepare(x, y, metric)
    y_sq = (y**2).sum(1)  # (n,)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk]
        d = (xs**2).sum(1)[:, None] - 2 * xs @ y.T + y_sq[None]  # (c, n) squared distances
        rows = np.arange(len(xs))
        own = d[rows, s + rows]
        out[s:s + chunk] = (d < own[:, None] - 1e-12).sum(1)
    return out


def foscttm(x, y, *, metric: str = "euclidean") -> dict[str, float]:
    """FOSCTTM of paired rows: ``{"x_to_y", "y_to_x", "mean"}`` (0 = every partner nearest, 0.5 = random)."""
    n = len(x)
    xy = float(n_closer(x, y, metric=metric).mean() / (n - 1))
    yx = float(n_closer(y, x, metric=metric).mean() / (n - 1))
    return {"x_to_y": xy, "y_to_x": yx, "mean": 0.5 * (xy + yx)}


def retrieval(x, y, *, k: Sequence[int] = (1, 10), metric: str = "euclidean") -> dict[str, float]:
    """Share of cells whose true partner is among their ``k`` nearest cells of the other modality:
    ``{"x_to_y_top1", "y_to_x_top1", "x_to_y_top10", ...}`` (random: k / n)."""
    xy, yx = n_closer(x, y, metric=metric), n_closer(y, x, metric=metric)
    out = {}
    for kk in k:
        out[f"x_to_y_top{kk}"] = float((xy < kk).mean())
        out[f"y_to_x_top{kk}"] = float((yx < kk).mean())
    return out


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a**2).sum(1) * (b**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / den
    return np.where(den > 1e-12, r, np.nan)


def _dense(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = pred.toarray() if hasattr(pred, "toarray") else np.asarray(pred)
    true = true.toarray() if hasattr(true, "toarray") else np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"imputed and measured matrices must have the same (cells, genes) shape, got "
                         f"{pred.shape} and {true.shape}")
    return pred.astype(np.float64), true.astype(np.float64)


def pearson_per_gene(pred, true) -> np.ndarray:
    """(genes,) Pearson r over cells between imputed and measured values (NaN for constant genes)."""
    pred, true = _dense(pred, true)
    return _rowwise_pearson(pred.T, true.T)


def pearson_per_cell(pred, true) -> np.ndarray:
    """(cells,) Pearson r over genes between imputed and measured values (NaN for constant cells)."""
    pred, true = _dense(pred, true)
    return _rowwise_pearson(pred, true)
