"""Contextual region embeddings and group-specific regions, as in the Atacformer paper.

:func:`region_embeddings` runs the encoder over every cell and averages the output at each bin token
per group (the bin's embedding *in the context of* that group's cells). :func:`specific_regions` ranks
bins that are both more accessible in a group and embedded differently there, annotated with the
nearest gene and promoter status. :func:`unannotated_promoters` trains a classifier on region
embeddings to recognise bins holding an annotated TSS, then flags high-scoring bins without one
(candidate unannotated promoters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from .._docs import doc_params
from ..genome import BinIndex, Genome, get_genome
from ..models import Atacformer
from ..tokenize.dataset import AnnDataCellDataset
from ..train.batcher import adata_cells, inference_batches


def _groups(adata: AnnData, groupby: str) -> tuple[list[str], np.ndarray]:
    if groupby not in adata.obs:
        raise ValueError(f"adata.obs has no {groupby!r} column")
    names, codes = np.unique(adata.obs[groupby].astype(str).to_numpy(), return_inverse=True)
    return list(names), codes


@torch.no_grad()
@doc_params()
def region_embeddings(
    adata: AnnData, model: Atacformer, *, groupby: str, batch_size: int = 64, key_added: str = "atacformer_regions",
    copy: bool = False,
) -> AnnData | None:
    """Contextual region embeddings: the mean encoder output at each open bin's token, per group.

    Parameters
    ----------
    {doc_adata}
    model
        The atacformer model (its genome and bin size must match the data).
    groupby
        ``obs`` column of the groups (e.g. cell type).
    batch_size
        Cells per forward pass.
    key_added
        ``uns`` key of the result.
    {doc_copy}

    Returns
    -------
    {doc_returns_copy}

    ``adata.uns[key_added]`` : dict
        ``groupby``, ``groups`` (G), ``bin_ids`` (N global ids of bins open in some cell), ``embeddings``
        (G, N, d; zero where a group never has the bin), ``counts`` (G, N cells with the bin in their
        sentence), ``mean`` (N, d, over all cells).
    """
    adata = adata.copy() if copy else adata
    names, codes = _groups(adata, groupby)
    cells = adata_cells(adata, model)
    used = np.unique(np.concatenate([c["bin_ids"] for c in cells] + [np.zeros(0, np.int64)]))
    d = model.config.d_model
    sums = np.zeros((len(names), len(used), d), dtype=np.float64)
    counts = np.zeros((len(names), len(used)), dtype=np.int64)
    model.eval()
    for idx, batch in inference_batches(cells, model.vocab, batch_size=batch_size, max_length=model.config.max_length,
                                        packed=model.device.type == "cuda"):
        h = model.encode(batch).float().cpu().numpy()  # (T, d) packed or (B*L, d) padded
        ids = batch.input_ids.cpu().numpy()
        if ids.ndim == 2:  # padded: one row per cell
            cell = np.repeat(np.arange(len(idx)), ids.shape[1])
            ids = ids.ravel()
        else:
            cell = np.repeat(np.arange(len(idx)), batch.seqlens.cpu().numpy())
        b = model.vocab.token_to_bin(ids)
        is_bin = b >= 0
        col = np.searchsorted(used, b[is_bin])
        g = codes[idx][cell[is_bin]]
        np.add.at(sums, (g, col), h[is_bin])
        np.add.at(counts, (g, col), 1)
    emb = sums / np.maximum(counts, 1)[..., None]
    mean = sums.sum(0) / np.maximum(counts.sum(0), 1)[:, None]
    adata.uns[key_added] = {"groupby": groupby, "groups": names, "bin_ids": used, "embeddings": emb.astype(np.float32),
                            "counts": counts, "mean": mean.astype(np.float32)}
    return adata if copy else None


def annotate_bins(bin_ids: np.ndarray, bins: BinIndex, genes: pd.DataFrame) -> pd.DataFrame:
    """Nearest gene of each bin, by TSS.

    Parameters
    ----------
    bin_ids
        Global bin ids.
    bins
        The bin index they refer to.
    genes
        Gene table with ``chrom``, ``tss``, ``gene`` (e.g. ``Genome.genes()``).

    Returns
    -------
    DataFrame with ``bin``, ``chrom``, ``start``, ``end``, ``nearest_gene``, ``tss_distance`` (bp from the
    bin to that TSS, 0 = inside) and ``promoter`` (an annotated TSS inside the bin).
    """
    c, start, end = bins.coords(bin_ids)
    out = pd.DataFrame({"bin": bins.names(bin_ids), "chrom": np.array(bins.chroms)[c], "start": start, "end": end,
                        "nearest_gene": "", "tss_distance": np.inf, "promoter": False})
    for chrom, g in genes.groupby("chrom", observed=True):
        rows = np.flatnonzero(out["chrom"].to_numpy() == chrom)
        if not len(rows):
            continue
        order = np.argsort(g["tss"].to_numpy())
        tss, gene = g["tss"].to_numpy()[order], g["gene"].to_numpy()[order]
        s, e = start[rows], end[rows]
        j = np.clip(np.searchsorted(tss, s), 0, len(tss) - 1)  # first TSS ≥ start (or the last one)
        cand = np.stack([np.clip(j - 1, 0, len(tss) - 1), j])  # (2, n)
        t = tss[cand]
        dist = np.where(t < s, s - t, np.where(t >= e, t - e + 1, 0))
        best = dist.argmin(0)
        pick = cand[best, np.arange(len(rows))]
        out.loc[rows, "nearest_gene"] = gene[pick]
        out.loc[rows, "tss_distance"] = dist[best, np.arange(len(rows))]
    out["promoter"] = out["tss_distance"].to_numpy() == 0
    return out


def _genome(adata: AnnData, genome: str | Genome | None) -> BinIndex:
    bins = BinIndex.from_uns(adata.uns)
    if genome is not None:
        g = get_genome(genome)
        if not g.same_coordinates(bins.genome):
            raise ValueError(f"genome {g.name!r} has other chromosome sizes than the data's {bins.genome.name!r}")
        bins = g.bins(bins.bin_size)
    return bins


def _group_top(X, m: np.ndarray, emb: np.ndarray, counts: np.ndarray, g: int, used: np.ndarray, min_cells: int,
               n_top: int) -> pd.DataFrame | None:
    """The ``n_top`` bins of group ``g`` (cells ``m``) by mean percentile rank of log2fc and embedding shift."""
    f_in = np.asarray(X[m].mean(0)).ravel()
    f_out = np.asarray(X[~m].mean(0)).ravel() if (~m).any() else np.zeros_like(f_in)
    log2fc = np.log2((f_in + 1e-3) / (f_out + 1e-3))
    rest = (emb * counts[..., None]).sum(0) - emb[g] * counts[g][:, None]
    rest /= np.maximum(counts.sum(0) - counts[g], 1)[:, None]
    cos = (emb[g] * rest).sum(1) / np.maximum(np.linalg.norm(emb[g], axis=1) * np.linalg.norm(rest, axis=1), 1e-12)
    shift = 1 - cos
    ok = (counts[g] >= min_cells) & (log2fc > 0)
    if not ok.any():
        return None
    rank = (pd.Series(log2fc[ok]).rank(pct=True) + pd.Series(shift[ok]).rank(pct=True)).to_numpy() / 2
    top = np.argsort(-rank)[:n_top]
    sel = np.flatnonzero(ok)[top]
    return pd.DataFrame({"bin_id": used[sel], "score": rank[top], "log2fc": log2fc[sel], "frac_in_group": f_in[sel],
                         "frac_rest": f_out[sel], "embedding_shift": shift[sel]})


def specific_regions(
    adata: AnnData, *, groupby: str | None = None, key: str = "atacformer_regions", genome: str | Genome | None = None,
    n_top: int = 20, min_cells: int = 3, key_added: str = "atacformer_specific_regions",
) -> pd.DataFrame:
    """Bins specific to each group in accessibility *and* contextual embedding (after
    :func:`region_embeddings`).

    Per group and bin: ``log2fc`` of the open fraction in the group vs the rest, ``embedding_shift`` =
    1 − cosine(group embedding, embedding in the other groups); score = mean of their percentile ranks,
    over bins open in ≥ ``min_cells`` group cells with log2fc > 0.

    Parameters
    ----------
    adata
        Cells × bins annotated data matrix.
    groupby
        ``obs`` column of the groups (default: the one :func:`region_embeddings` used).
    key
        ``uns`` key of the region embeddings.
    genome
        Genome whose gene annotation is used (default: the data's).
    n_top
        Bins kept per group.
    min_cells
        A bin must be open in at least this many cells of the group.
    key_added
        ``uns`` key of the table.

    Returns
    -------
    The table (group, bin_id, score, log2fc, frac_in_group, frac_rest, embedding_shift, bin, nearest_gene,
    tss_distance, promoter), also stored in ``adata.uns[key_added]``.
    """
    if key not in adata.uns:
        raise ValueError(f"adata.uns has no {key!r}: run tl.region_embeddings first")
    reg = adata.uns[key]
    groupby = groupby or reg["groupby"]
    names, codes = _groups(adata, groupby)
    if list(names) != list(reg["groups"]):
        raise ValueError(f"obs[{groupby!r}] groups differ from those of uns[{key!r}]")
    bins = _genome(adata, genome)
    used = np.asarray(reg["bin_ids"])
    X = (AnnDataCellDataset(adata, label_keys=[]).X[:, used] > 0).astype(np.float64).tocsc()
    emb, counts = np.asarray(reg["embeddings"], np.float64), np.asarray(reg["counts"])
    frames = [f.assign(group=name)[["group", *f.columns]] for g, name in enumerate(names)
              if (f := _group_top(X, codes == g, emb, counts, g, used, min_cells, n_top)) is not None]
    if not frames:
        raise ValueError(f"no bin is open in ≥ {min_cells} cells of any group more than elsewhere")
    out = pd.concat(frames, ignore_index=True)
    genes = bins.genome.genes()
    ann = annotate_bins(out["bin_id"].to_numpy(), bins, genes)
    out = pd.concat([out, ann[["bin", "nearest_gene", "tss_distance", "promoter"]]], axis=1)
    adata.uns[key_added] = out
    return out


def unannotated_promoters(
    adata: AnnData, *, key: str = "atacformer_regions", genome: str | Genome | None = None, threshold: float = 0.5,
    seed: int = 0, key_added: str = "atacformer_promoter_candidates",
) -> pd.DataFrame:
    """Candidate unannotated promoters from the region embeddings (after :func:`region_embeddings`).

    A 5-fold cross-validated logistic regression learns promoter / not (an annotated TSS in the bin) from
    each bin's all-cell mean embedding; bins without a TSS scoring ≥ ``threshold`` are candidates.

    Parameters
    ----------
    adata
        Cells × bins annotated data matrix.
    key
        ``uns`` key of the region embeddings.
    genome
        Genome whose gene annotation is used (default: the data's).
    threshold
        Cross-validated promoter probability above which a bin without a TSS is a candidate.
    seed
        Seed of the folds.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    The candidates sorted by ``promoter_score``. Sets ``adata.uns[key_added]``: ``auc`` (cross-validated
    ROC AUC), ``n_promoter_bins``, ``n_bins``, ``candidates`` and the per-bin ``scores``.
    """
    if key not in adata.uns:
        raise ValueError(f"adata.uns has no {key!r}: run tl.region_embeddings first")
    reg = adata.uns[key]
    bins = _genome(adata, genome)
    used = np.asarray(reg["bin_ids"])
    ann = annotate_bins(used, bins, bins.genome.genes())
    y = ann["promoter"].to_numpy().astype(int)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if min(n_pos, n_neg) < 5:
        raise ValueError(f"need ≥ 5 promoter and ≥ 5 other bins to train, got {n_pos} and {n_neg}")
    X = np.asarray(reg["mean"], np.float64)
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    score = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")[:, 1]
    ann["promoter_score"] = score
    auc = float(roc_auc_score(y, score))
    cand = ann[(~ann["promoter"]) & (score >= threshold)].sort_values("promoter_score", ascending=False)
    adata.uns[key_added] = {"auc": auc, "n_promoter_bins": n_pos, "n_bins": len(y),
                            "candidates": cand.reset_index(drop=True), "scores": ann}
    return cand.reset_index(drop=True)
