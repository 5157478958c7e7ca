"""Per-cell QC on cells × bins AnnData: count metrics, summary table, threshold filters (scanpy style).

Fragment-level QC (TSS enrichment, nucleosome signal, duplication, …) is computed while reading fragments
by :func:`atacformer.io.read_fragments`; see :mod:`atacformer.io._qc` for the definitions.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .._docs import doc_params

QC_COLUMNS = ("n_fragments", "n_unique", "duplication_rate", "frac_mito", "nucleosome_signal", "tss_enrichment",
              "frac_promoter", "n_counts", "n_bins")


@doc_params()
def count_metrics(adata: ad.AnnData, *, key_added: str = "", copy: bool = False) -> ad.AnnData | None:
    """Total counts and open bins of each cell, from ``adata.X``.

    Parameters
    ----------
    {doc_adata}
    key_added
        Prefix of the two ``obs`` columns.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.obs[key_added + 'n_counts']`` : int64
        Sum of the cell's counts.
    ``adata.obs[key_added + 'n_bins']`` : int64
        Number of bins with a non-zero count.
    """
    adata = adata.copy() if copy else adata
    X = adata.X
    adata.obs[f"{key_added}n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    adata.obs[f"{key_added}n_bins"] = np.asarray((X > 0).sum(axis=1)).ravel().astype(np.int64)
    return adata if copy else None


def qc_summary(adata: ad.AnnData) -> pd.DataFrame:
    """Median, mean, min and max of each QC column present in ``obs`` (total counts and open bins are
    computed from ``X`` when missing); ``adata`` is not modified.

    Parameters
    ----------
    adata
        Cells × bins annotated data matrix.

    Returns
    -------
    DataFrame with one row per QC metric and columns ``median``, ``mean``, ``min``, ``max``.
    """
    cols = [c for c in QC_COLUMNS if c in adata.obs.columns]
    if "n_counts" not in cols and adata.X is not None:
        counts = count_metrics(ad.AnnData(X=adata.X), copy=True).obs.set_axis(adata.obs_names)
        obs = pd.concat([adata.obs[cols], counts], axis=1)
    else:
        obs = adata.obs[cols]
    obs = obs.astype(float)
    return pd.DataFrame({"median": obs.median(), "mean": obs.mean(), "min": obs.min(), "max": obs.max()})


def _passing(adata: ad.AnnData, rules: dict) -> tuple[np.ndarray, dict]:
    """(cells passing every ``{(obs column, ">=" or "<="): threshold}`` rule, the rules used)."""
    keep = np.ones(adata.n_obs, dtype=bool)
    used = {}
    for (col, op), value in rules.items():
        if value is None:
            continue
        if col not in adata.obs.columns:
            raise ValueError(f"filter on {col!r} needs obs[{col!r}] (made by atacformer.io.read_fragments)")
        x = adata.obs[col].to_numpy(dtype=float)
        keep &= (x >= value) if op == ">=" else (x <= value)  # NaN fails every test
        used[f"{col} {op}"] = value
    return keep, used


@doc_params()
def filter_cells(
    adata: ad.AnnData,
    *,
    min_fragments: int | None = None,
    max_fragments: int | None = None,
    min_tss_enrichment: float | None = None,
    max_frac_mito: float | None = None,
    max_duplication_rate: float | None = None,
    max_nucleosome_signal: float | None = None,
    min_counts: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Keep the cells passing every given threshold (``None`` = not filtered on). Removing every cell
    is an error.

    Parameters
    ----------
    {doc_adata}
    min_fragments, max_fragments
        Bounds on unique fragments, ``obs['n_unique']`` (from :func:`atacformer.io.read_fragments`).
    min_tss_enrichment
        Lower bound on ``obs['tss_enrichment']``.
    max_frac_mito, max_duplication_rate, max_nucleosome_signal
        Upper bounds on ``obs['frac_mito']``, ``obs['duplication_rate']``, ``obs['nucleosome_signal']``.
    min_counts
        Lower bound on the row sums of ``X``.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata`` (subset to the passing cells)
        NaN values fail every test.
    ``adata.uns['filter_cells']`` : dict
        ``thresholds`` used and ``n_removed`` cells.
    """
    keep, used = _passing(adata, {("n_unique", ">="): min_fragments, ("n_unique", "<="): max_fragments,
                                  ("tss_enrichment", ">="): min_tss_enrichment, ("frac_mito", "<="): max_frac_mito,
                                  ("duplication_rate", "<="): max_duplication_rate,
                                  ("nucleosome_signal", "<="): max_nucleosome_signal})
    if min_counts is not None:
        keep &= np.asarray(adata.X.sum(axis=1)).ravel() >= min_counts
        used["n_counts >="] = min_counts
    if not keep.any():
        raise ValueError(f"no cells pass the filters {used} (of {adata.n_obs} cells)")
    info = {"thresholds": {k: float(v) for k, v in used.items()}, "n_removed": int((~keep).sum())}
    if copy:
        out = adata[keep].copy()
        out.uns["filter_cells"] = info
        return out
    adata._inplace_subset_obs(keep)
    adata.uns["filter_cells"] = info
    return None
