"""Plots in scanpy's manner (``ax=``, ``show=``, ``save=``): UMAP by label/cluster/batch, confusion
matrix, training curves, QC distributions."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.ticker import MaxNLocator

from .._docs import doc_params
from ._utils import finish, panels, plt

#: readable names of the columns that atacformer's tools log or store
LABELS = {
    "loss": "total loss", "state": "masked-bin state loss", "contrastive": "contrastive loss (<cls> views)",
    "loss_state0": "cross-entropy, closed bins", "loss_state1": "cross-entropy, open bins kept in the input",
    "loss_state2": "cross-entropy, open bins removed from the input",
    "auroc_removed": "AUROC: removed open bins vs closed", "auprc_removed": "AUPRC: removed open bins vs closed",
    "lr": "learning rate", "accuracy": "accuracy", "macro_f1": "macro-F1", "state_loss": "masked-bin state loss",
    "contrastive_loss": "contrastive loss (<cls> views)", "discriminator_loss": "batch discriminator loss",
    "discriminator_accuracy": "batch discriminator accuracy", "mnn_pairs": "mutual-nearest-neighbour pairs",
    "cell_type": "cell type", "donor": "donor", "n_open_bins": "open bins per cell", "total_counts": "counts per cell",
    "step": "training step", "epoch": "epoch",
}
_SPLITS = {"train/": "training", "train_": "training", "val/": "validation", "val_": "validation"}


def label(name: str) -> str:
    """Readable name of a logged column or obs key.

    Parameters
    ----------
    name
        Column name (e.g. ``"loss_state0"``, ``"cell_type"``).

    Returns
    -------
    The entry of :data:`LABELS`, else the name with underscores as spaces.
    """
    return LABELS.get(name, name.replace("_", " "))


@doc_params()
def umap(
    adata: AnnData, *, color: str | Sequence[str], basis: str = "X_umap", title: str | Sequence[str] | None = None,
    suptitle: str | None = None, point_size: float | None = None, ax=None, show: bool | None = None,
    save: str | Path | None = None,
):
    """Scatter of a 2-D embedding coloured by categorical ``obs`` columns, one panel per column.

    Parameters
    ----------
    {doc_adata}
    color
        ``obs`` column(s) to colour by.
    basis
        ``obsm`` key of the coordinates (e.g. from :func:`atacformer.tl.umap`).
    title
        Panel title(s); default: the readable name of each ``color`` column.
    suptitle
        Heading above all panels.
    point_size
        Marker size (default from the number of cells).
    {doc_show_save}

    Returns
    -------
    {doc_plot_returns}
    """
    if basis not in adata.obsm:
        raise ValueError(f"adata.obsm has no {basis!r}; run tl.umap first")
    keys = [color] if isinstance(color, str) else list(color)
    missing = [k for k in keys if k not in adata.obs]
    if missing:
        raise ValueError(f"adata.obs has no column(s) {missing}")
    titles = [label(k) for k in keys] if title is None else ([title] if isinstance(title, str) else list(title))
    if len(titles) != len(keys):
        raise ValueError(f"{len(titles)} titles for {len(keys)} panels")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    s = point_size or max(2.0, 120_000 / max(adata.n_obs, 1) ** 1.5)
    fig, axes, own = panels(len(keys), ax=ax, size=3.6, aspect=1.25)
    for ax_, key, t in zip(axes, keys, titles, strict=False):
        cats = pd.Categorical(adata.obs[key].astype(str))
        cmap = plt.get_cmap("tab20" if len(cats.categories) > 10 else "tab10")
        for j, cat in enumerate(cats.categories):
            m = cats.codes == j
            ax_.scatter(xy[m, 0], xy[m, 1], s=s, color=cmap(j % cmap.N), label=cat, linewidths=0)
        ax_.set_title(t)
        ax_.set_xticks([]), ax_.set_yticks([])
        ax_.set_xlabel("UMAP 1", fontsize=8), ax_.set_ylabel("UMAP 2", fontsize=8)
        # legend below the panel, so long labels never run under the next panel
        ax_.legend(fontsize=7, markerscale=2, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.06),
                   ncol=min(3, len(cats.categories)))
    if suptitle:
        fig.suptitle(suptitle, fontweight="bold")
    return finish(fig, axes, own=own, show=show, save=save)


@doc_params()
def confusion(true, predicted, *, title: str = "confusion matrix", ax=None, show: bool | None = None,
              save: str | Path | None = None):
    """Row-normalised confusion matrix (rows = true labels, columns = predicted, incl. "unknown"); each
    cell shows its number of cells.

    Parameters
    ----------
    true, predicted
        Labels of the same cells.
    title
        Axes title.
    {doc_show_save}

    Returns
    -------
    {doc_plot_returns}
    """
    tab = pd.crosstab(pd.Series(np.asarray(true).astype(str), name="true"),
                      pd.Series(np.asarray(predicted).astype(str), name="predicted"))
    frac = tab.div(tab.sum(1), axis=0)
    if ax is None:
        fig, ax_ = plt.subplots(figsize=(1.6 + 0.6 * tab.shape[1], 1.4 + 0.5 * tab.shape[0]), layout="constrained")
        own = True
    else:
        fig, ax_, own = ax.figure, ax, False
    ax_.imshow(frac.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(tab.to_numpy()):
        ax_.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if frac.iat[i, j] > 0.5 else "black")
    ax_.set_xticks(range(tab.shape[1]), tab.columns, rotation=60, ha="right", fontsize=7)
    ax_.set_yticks(range(tab.shape[0]), tab.index, fontsize=7)
    ax_.set_xlabel("predicted"), ax_.set_ylabel("true"), ax_.set_title(title, fontsize=9)
    return finish(fig, [ax_], own=own, show=show, save=save)


def read_curves(source: str | Path | pd.DataFrame | dict) -> pd.DataFrame:
    """Training history as a DataFrame.

    Parameters
    ----------
    source
        A Lightning ``metrics.csv`` path, a DataFrame, or a dict of lists.

    Returns
    -------
    The history, one row per logged step or epoch.
    """
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, dict):
        return pd.DataFrame(source)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: no such training log")
    return pd.read_csv(path)


def _curve_groups(df: pd.DataFrame, x: str | None) -> dict[str, dict[str, str]]:
    """``{metric: {split: column}}``: ``train_loss`` and ``val_loss`` share the panel ``loss``."""
    groups: dict[str, dict[str, str]] = {}
    for c in df.columns:
        if c in ("step", "epoch", x) or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        prefix = next((p for p in _SPLITS if c.startswith(p)), "")
        groups.setdefault(c[len(prefix):], {})[_SPLITS.get(prefix, "")] = c
    return dict(sorted(groups.items(), key=lambda kv: ("loss" not in kv[0] and kv[0] != "state", kv[0])))


@doc_params()
def training_curves(source, *, x: str | None = None, title: str = "training", ncols: int = 4, ax=None,
                    show: bool | None = None, save: str | Path | None = None):
    """Training history, one panel per metric (losses first; training and validation of the same metric
    share a panel). Lightning CSV logs have one metric per row with NaN elsewhere; each curve drops its NaNs.

    Parameters
    ----------
    source
        See :func:`read_curves`.
    x
        Column of the x axis (default ``step``, else ``epoch``, else the row number).
    title
        Heading above the panels.
    ncols
        Panels per row.
    {doc_show_save}

    Returns
    -------
    {doc_plot_returns}
    """
    df = read_curves(source)
    x = x or next((c for c in ("step", "epoch") if c in df), None)
    groups = _curve_groups(df, x)
    if not groups:
        raise ValueError("training log has no numeric metric columns")
    fig, axes, own = panels(len(groups), ax=ax, size=3.0, ncols=ncols, aspect=0.8)
    for ax_, (metric, splits) in zip(axes, groups.items(), strict=False):
        for split, col in splits.items():
            d = df[[col] + ([x] if x else [])].dropna()
            xs = d[x].to_numpy() if x else np.arange(len(d))
            ax_.plot(xs, d[col], lw=1.2, marker="." if len(d) < 30 else None, label=split or None)
            if len(xs) and xs.min() == xs.max():  # a single step/epoch: integer ticks around it
                ax_.set_xlim(xs.min() - 1, xs.max() + 1)
        only = next(iter(splits)) if len(splits) == 1 and "validation" in splits else ""
        ax_.set_title(textwrap.fill(label(metric) + (f" ({only})" if only else ""), 30), fontsize=9)
        ax_.set_xlabel(label(x) if x else "row", fontsize=8)
        ax_.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_.tick_params(labelsize=7)
        if len(splits) > 1:
            ax_.legend(fontsize=7, frameon=False)
    if own:
        fig.suptitle(title, fontweight="bold")
    return finish(fig, axes, own=own, show=show, save=save)


@doc_params()
def qc(adata: AnnData, *, keys: Sequence[str] | None = None, groupby: str | None = None, title: str | None = None,
       ax=None, show: bool | None = None, save: str | Path | None = None):
    """Distributions of per-cell QC values, one panel per key; with ``groupby`` one outlined (step)
    density per group, so a small group stays visible beside a large one.

    Parameters
    ----------
    {doc_adata}
    keys
        ``obs`` columns (default: open bins and total counts per cell, computed from ``X``).
    groupby
        ``obs`` column splitting the cells (sample, donor, cell type).
    title
        Prefix of the panel titles (e.g. the dataset's name).
    {doc_show_save}

    Returns
    -------
    {doc_plot_returns}
    """
    obs = adata.obs.copy()
    if keys is None:
        obs["n_open_bins"] = np.asarray((adata.X > 0).sum(1)).ravel()
        obs["total_counts"] = np.asarray(adata.X.sum(1)).ravel()
        keys = ["n_open_bins", "total_counts"]
    missing = [k for k in keys if k not in obs]
    if missing or (groupby is not None and groupby not in obs):
        raise ValueError(f"adata.obs has no column(s) {missing or [groupby]}")
    fig, axes, own = panels(len(keys), ax=ax, size=3.6, aspect=0.8)
    for ax_, k in zip(axes, keys, strict=False):
        values = np.log10(obs[k].to_numpy(dtype=float) + 1)
        edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=30)
        groups = [(f"all ({len(obs)} cells)", values)] if groupby is None else [
            (f"{name} ({len(v)} cells)", np.log10(v.to_numpy(dtype=float) + 1))
            for name, v in obs.groupby(groupby, observed=True)[k]]
        for name, v in groups:
            ax_.hist(v, bins=edges, density=True, histtype="step", lw=1.6, label=name)
        ax_.set_title(f"{title}: {label(k)}" if title else label(k), fontsize=10)
        ax_.set_xlabel(f"log10({label(k)} + 1)", fontsize=8), ax_.set_ylabel("density (area 1 per group)", fontsize=8)
        ax_.legend(fontsize=7, frameon=False)
    return finish(fig, axes, own=own, show=show, save=save)
