"""Interpretation: attributions of a gene's TSS output to every input position, and enhancer–gene
links scored by them, next to the distance and ABC (activity / distance) baselines.

* :func:`gradient_x_input` — d output / d input × input, on the DNA (summed over the 4 bases) and on
  each epigenome channel.
* :func:`attention_rows` — the attention row of the query position, averaged over heads and layers
  (each row sums to 1).
* :func:`link_scores` — one row per (gene, candidate region, cell type): ``score`` (gradient × input on
  an epigenome channel, summed over the region's bins), ``attention``, ``activity`` (raw track sum),
  ``distance``; :func:`add_baselines` adds ``distance_score`` and ``abc_score``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from .data import EpiData
from .model import EpiAttend
from .windows import WindowDataset, centered_windows

SCORE_COLUMNS = ("score", "attention", "distance_score", "abc_score")


def gradient_x_input(
    fn: Callable, seq: torch.Tensor | None, epi: torch.Tensor | None, *, position: int | torch.Tensor, target: int = 0
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradient × input of ``fn(seq, epi)[b, target, position[b]]`` for every sample ``b``.

    ``fn`` maps seq (B, L, 4) and epi (B, E, P) to (B, T, N) (an :class:`EpiAttend` in eval mode, or
    any differentiable function). Returns seq attributions (B, L) (summed over bases) and epi
    attributions (B, E, P); ``None`` for an input that was ``None``.
    """
    inputs = [x.detach().clone().requires_grad_(True) if x is not None else None for x in (seq, epi)]
    y = fn(*inputs)  # (B, T, N)
    b = torch.arange(y.shape[0])
    pos = (torch.as_tensor(position).expand(y.shape[0]) if not torch.is_tensor(position) or position.ndim == 0
           else position)
    picked = y[b, target, pos].sum()  # samples are independent (eval mode), so one backward serves all
    grads = torch.autograd.grad(picked, [x for x in inputs if x is not None])
    grads = iter(grads)
    seq_attr = (next(grads) * inputs[0]).sum(-1).detach() if inputs[0] is not None else None  # (B, L)
    epi_attr = (next(grads) * inputs[1]).detach() if inputs[1] is not None else None  # (B, E, P)
    return seq_attr, epi_attr


@torch.no_grad()
def attention_rows(model: EpiAttend, seq: torch.Tensor | None, epi: torch.Tensor | None, *,
                   position: int) -> torch.Tensor:
    """Attention from output position ``position`` (0..N-1) to every input position: (B, P), the mean
    over heads and layers of the query row (``position + crop`` in the uncropped sequence)."""
    _, maps = model(seq, epi, return_attention=True)
    rows = torch.stack([a[:, :, position + model.cfg.crop, :] for a in maps])  # (n_layers, B, H, P)
    return rows.mean(dim=(0, 2))


def link_scores(
    model: EpiAttend,
    data: EpiData,
    genes: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    max_distance: int,
    channel: int = 0,
    target: int = 0,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Score every candidate region within ``max_distance`` (region centre to TSS) of each gene, in each
    cell type, from a window centred on the gene's TSS.

    ``genes``: ``gene, chrom, tss``; ``regions``: ``region, chrom, start, end``. Returns
    ``gene, region, cell_type, distance, score, attention, activity``.
    """
    cfg, bs = model.cfg, data.bin_size
    half = (cfg.n_positions // 2) * bs
    if max_distance > half - bs:
        raise ValueError(f"max_distance={max_distance} does not fit in a {cfg.seq_len} bp window (max {half - bs})")
    if not cfg.uses_epigenome:
        raise ValueError("link scores need the epigenome stream (mode 'both' or 'epigenome')")
    model.eval()
    device = next(model.parameters()).device
    genes = genes.reset_index(drop=True)
    windows = centered_windows(genes.chrom, genes.tss, seq_len=cfg.seq_len, bin_size=bs)
    # gene_idx, region, lo, hi, distance
    pairs = _pairs(genes, regions, windows, max_distance=max_distance, bin_size=bs)
    centre = cfg.n_positions // 2
    out = []
    for ci, ct in enumerate(data.cell_types):
        ds = WindowDataset(data, windows, seq_len=cfg.seq_len, cell_types=[ci])
        epi_attr, attn = [], []
        for batch in DataLoader(ds, batch_size=batch_size):
            seq = batch["seq"].to(device) if cfg.uses_sequence else None
            epi = batch["epi"].to(device)
            _, e = gradient_x_input(model, seq, epi, position=centre - cfg.crop, target=target)
            epi_attr.append(e[:, channel].cpu().numpy())  # (B, P)
            attn.append(attention_rows(model, seq, epi, position=centre - cfg.crop).cpu().numpy())  # (B, P)
        epi_attr, attn = np.concatenate(epi_attr), np.concatenate(attn)  # (G, P)
        for row in pairs.itertuples():
            g, lo, hi = row.gene_idx, row.lo, row.hi
            chrom, b0 = genes.chrom[g], int(windows.start[g]) // bs
            activity = data.tracks[chrom][ci, channel, b0 + lo : b0 + hi].sum()
            out.append((genes.gene[g], row.region, ct, row.distance, epi_attr[g, lo:hi].sum(), attn[g, lo:hi].sum(),
                        activity))
    return pd.DataFrame(out, columns=["gene", "region", "cell_type", "distance", "score", "attention", "activity"])


def _pairs(genes, regions, windows, *, max_distance: int, bin_size: int) -> pd.DataFrame:
    """Candidate (gene, region) pairs with window-relative bin ranges ``[lo, hi)``."""
    rows = []
    by_chrom = {c: r for c, r in regions.groupby("chrom", sort=False)}
    for g, (chrom, tss, start) in enumerate(zip(genes.chrom, genes.tss, windows.start, strict=False)):
        r = by_chrom.get(chrom)
        if r is None:
            continue
        centre = (r.start.to_numpy() + r.end.to_numpy()) // 2
        near = np.abs(centre - tss) <= max_distance
        for name, s, e, c in zip(r.region[near], r.start[near], r.end[near], centre[near], strict=False):
            rows.append((g, name, (s - start) // bin_size, (e - 1 - start) // bin_size + 1, int(c - tss)))
    return pd.DataFrame(rows, columns=["gene_idx", "region", "lo", "hi", "distance"])


def add_baselines(links: pd.DataFrame, *, min_distance: int = 128) -> pd.DataFrame:
    """Add ``distance_score`` (−|distance|) and ``abc_score`` (activity / max(|distance|, min_distance))."""
    d = np.maximum(links["distance"].abs(), min_distance)
    return links.assign(distance_score=-links["distance"].abs().astype(float), abc_score=links["activity"] / d)


def summarize_links(links: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score over cell types → one row per (gene, region)."""
    cols = [c for c in (*SCORE_COLUMNS, "activity") if c in links.columns]
    return links.groupby(["gene", "region"], sort=False).agg(distance=("distance", "first"),
                                                             **{c: (c, "mean") for c in cols}).reset_index()


def link_auroc(summary: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """AUROC of each score column against ``truth.linked`` (joined on gene, region)."""
    from sklearn.metrics import roc_auc_score

    merged = summary.merge(truth[["gene", "region", "linked"]], on=["gene", "region"], how="inner")
    if merged.linked.nunique() < 2:
        raise ValueError("AUROC needs both linked and unlinked pairs among the scored candidates")
    return {c: float(roc_auc_score(merged.linked, merged[c])) for c in SCORE_COLUMNS if c in merged.columns}
