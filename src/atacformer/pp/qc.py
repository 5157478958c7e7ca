"""Per-cell QC on cells × bins AnnData: count metrics, summary table, threshold filters (scanpy style).

Fragment-level QC (TSS enrichment, nucleosome signal, duplication, …) is computed while reading fragments
by :func:`atacformer.io.read_fragments`; see :mod:`atacformer.io._qc` for the definitions.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

QC_COLUMNS = ("n_fragments", "n_unique", "duplication_rate", "frac_mito", "nucleosome_signal", "tss_enrichment",
              "frac_promoter", "n_counts", "n_bins")


def count_metrics(adata: ad.AnnData, *, key_added: str = "") -> None:
    """Add ``obs[key_added + 'n_counts']`` (total counts) and ``obs[key_added + 'n_bins']`` (open bins)."""
    X = adata.X
    adata.obs[f"{key_added}n_counts"] = np.asarray(X.sum(axis=1)).ravel().astype(np.int64)
    adata.obs[f"{key_added}n_bins"] = np.asarray((X > 0).sum(axis=1)).ravel().astype(np.int64)


def qc_summary(adata: ad.AnnData) -> pd.DataFrame:
    """Median, mean, min and max of each QC column present in ``obs`` (rows = metrics)."""
    cols = [c for c in QC_COLUMNS if c in adata.obs.columns]
    if "n_counts" not in cols and adata.X is not None:
        tmp = ad.AnnData(X=adata.X)
        count_metrics(tmp)
        obs = pd.concat([adata.obs[cols], tmp.obs.set_axis(adata.obs_names)], axis=1)
    else:
        obs = adata.obs[cols]
    obs = obs.astype(float)
    return pd.DataFrame({"median": obs.median(), "mean": obs.mean(), "min": obs.min(), "max": obs.max()})


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
    inplace: bool = True,
) -> ad.AnnData | None:
    """Keep cells passing every given threshold (fragments are ``obs['n_unique']``; counts are row sums).

    Records the thresholds and the number of cells removed in ``uns['filter_cells']``. Removing every
    cell is an error. Returns the filtered copy when ``inplace=False``.
    """
    keep = np.ones(adata.n_obs, dtype=bool)
    rules = {("n_unique", ">="): min_fragments, ("n_unique", "<="): max_fragments,
             ("tss_enrichment", ">="): min_tss_enrichment, ("frac_mito", "<="): max_frac_mito,
             ("duplication_rate", "<="): max_duplication_rate, ("nucleosome_signal", "<="): max_nucleosome_signal}
    used = {}
    for (col, op), value in rules.items():
        if value is None:
            continue
        if col not in adata.obs.columns:
            raise ValueError(f"filter on {col!r} needs obs[{col!r}] (made by atacformer.io.read_fragments)")
        x = adata.obs[col].to_numpy(dtype=float)
        keep &= (x >= value) if op == ">=" else (x <= value)  # NaN fails every test
        used[f"{col} {op}"] = value
    if min_counts is not None:
        keep &= np.asarray(adata.X.sum(axis=1)).ravel() >= min_counts
        used["n_counts >="] = min_counts
    if not keep.any():
        raise ValueError(f"no cells pass the filters {used} (of {adata.n_obs} cells)")
    info = {"thresholds": {k: float(v) for k, v in used.items()}, "n_removed": int((~keep).sum())}
    if not inplace:
        out = adata[keep].copy()
        out.uns["filter_cells"] = info
        return out
    adata._inplace_subset_obs(keep)
    adata.uns["filter_cells"] = info
    return None
