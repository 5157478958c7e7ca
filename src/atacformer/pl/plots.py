"""Plots written as PNG files: UMAP by label/cluster/batch, confusion matrix, training curves, QC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from ._utils import plt, save, subplots


def umap(
    adata: AnnData, *, color: str | list[str], path: str | Path, basis: str = "X_umap", title: str | None = None,
    point_size: float | None = None,
) -> Path:
    """Scatter of ``obsm[basis]`` coloured by one or more categorical ``obs`` columns (one panel each)."""
    if basis not in adata.obsm:
        raise ValueError(f"adata.obsm has no {basis!r}; run tl.umap first")
    keys = [color] if isinstance(color, str) else list(color)
    missing = [k for k in keys if k not in adata.obs]
    if missing:
        raise ValueError(f"adata.obs has no column(s) {missing}")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    s = point_size or max(2.0, 120_000 / max(adata.n_obs, 1) ** 1.5)
    fig, axes = subplots(len(keys))
    for ax, key in zip(axes, keys):
        cats = pd.Categorical(adata.obs[key].astype(str))
        cmap = plt.get_cmap("tab20" if len(cats.categories) > 10 else "tab10")
        for j, cat in enumerate(cats.categories):
            m = cats.codes == j
            ax.scatter(xy[m, 0], xy[m, 1], s=s, color=cmap(j % cmap.N), label=cat, linewidths=0)
        ax.set_title(key)
        ax.set_xticks([]), ax.set_yticks([])
        # legend below each panel, so long labels never run under the next panel
        ax.legend(fontsize=7, markerscale=2, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.02),
                  ncol=min(3, len(cats.categories)))
    if title:
        fig.suptitle(title, y=1.04, fontweight="bold")  # once above the panels (prefixes ran into each other)
    return save(fig, path)


def confusion(true, predicted, *, path: str | Path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix (rows = true labels, columns = predicted, incl. "unknown")."""
    tab = pd.crosstab(pd.Series(np.asarray(true).astype(str), name="true"),
                      pd.Series(np.asarray(predicted).astype(str), name="predicted"))
    frac = tab.div(tab.sum(1), axis=0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * tab.shape[1], 1.0 + 0.5 * tab.shape[0]))
    ax.imshow(frac.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(tab.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if frac.iat[i, j] > 0.5 else "black")
    ax.set_xticks(range(tab.shape[1]), tab.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(tab.shape[0]), tab.index, fontsize=7)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    return save(fig, path)


def read_curves(source: str | Path | pd.DataFrame | dict) -> pd.DataFrame:
    """Training history as a DataFrame: a Lightning ``metrics.csv`` path, a DataFrame or a dict of lists."""
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, dict):
        return pd.DataFrame(source)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: no such training log")
    return pd.read_csv(path)


def training_curves(source, *, path: str | Path, x: str | None = None, title: str = "training") -> Path:
    """One panel per numeric metric (loss columns first) against ``step``/``epoch`` (Lightning CSV logs
    have one metric per row with NaN elsewhere; each curve drops its NaNs)."""
    df = read_curves(source)
    x = x or next((c for c in ("step", "epoch") if c in df), None)
    cols = [c for c in df.columns if c not in ("step", "epoch") and pd.api.types.is_numeric_dtype(df[c])]
    cols = sorted(cols, key=lambda c: ("loss" not in c, c))
    if not cols:
        raise ValueError("training log has no numeric metric columns")
    fig, axes = subplots(len(cols), size=3.2, ncols=4)
    for ax, c in zip(axes, cols):
        d = df[[c] + ([x] if x else [])].dropna()
        ax.plot(d[x] if x else np.arange(len(d)), d[c], lw=1.2, marker="." if len(d) < 30 else None)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel(x or "row", fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def qc(adata: AnnData, *, keys: list[str] | None = None, path: str | Path, groupby: str | None = None) -> Path:
    """Histograms of per-cell QC values (``obs`` columns; default: open bins and total counts from X)."""
    obs = adata.obs.copy()
    if keys is None:
        X = adata.X
        obs["n_open_bins"] = np.asarray((X > 0).sum(1)).ravel()
        obs["total_counts"] = np.asarray(X.sum(1)).ravel()
        keys = ["n_open_bins", "total_counts"]
    fig, axes = subplots(len(keys), size=3.5)
    for ax, k in zip(axes, keys):
        if k not in obs:
            raise ValueError(f"adata.obs has no QC column {k!r}")
        groups = [(None, obs[k])] if groupby is None else list(obs.groupby(groupby, observed=True)[k])
        for name, vals in groups:
            ax.hist(np.log10(np.asarray(vals, dtype=float) + 1), bins=30, alpha=0.6, label=name)
        ax.set_xlabel(f"log10({k} + 1)"), ax.set_ylabel("cells")
        if groupby:
            ax.legend(fontsize=7, frameon=False)
    return save(fig, path)
