"""Shared plumbing for the fine-tuning tools: AnnData → cells → packed batches → <cls> embeddings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from ..models import Atacformer, PackedBatch, collate_cells
from ..models.batch import mask_bins
from ..tokenize.dataset import AnnDataCellDataset


def cell_dicts(adata: AnnData, model: Atacformer) -> list[dict]:
    """``{"bin_ids": open global bin ids}`` per cell; raises if the data's genome/bins differ from the model's."""
    model.check_data(adata.uns, what="AnnData")
    ds = AnnDataCellDataset(adata, label_keys=[])
    return [{"bin_ids": ds.X.indices[ds.X.indptr[i] : ds.X.indptr[i + 1]].astype(np.int64)} for i in range(len(ds))]


def label_codes(values, classes: Sequence[str]) -> np.ndarray:
    """Codes of ``values`` in ``classes``; -1 for missing/unseen."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(v), -1) for v in np.asarray(values, dtype=object)], dtype=np.int64)


def subsample(cell: dict, keep: tuple[float, float], rng: np.random.Generator) -> dict:
    """``cell`` with a uniform-random share in ``keep`` = (lo, hi) of its open bins (depth augmentation:
    the dropped bins look closed, as in a shallower cell; at least one bin is kept)."""
    bins = np.asarray(cell["bin_ids"], dtype=np.int64)
    fraction = float(rng.uniform(*keep))
    kept = mask_bins(bins, min(1.0 - fraction, 1.0 - 1.0 / max(len(bins), 1)), rng)
    return {**cell, "bin_ids": kept}


def batches(
    cells: list[dict], model: Atacformer, *, batch_size: int, mask_fraction: float = 0.0,
    rng: np.random.Generator | None = None, shuffle: bool = False, indices: np.ndarray | None = None,
    keep: tuple[float, float] | None = None, contrastive_drop: float | None = None,
    contrastive_neighbor_add: float = 0.0,
) -> Iterator[tuple[np.ndarray, PackedBatch]]:
    """(cell indices, packed batch) over ``indices`` (default all cells), shuffled with ``rng`` if asked.

    ``keep`` = (lo, hi): each cell is first subsampled (:func:`subsample`) to that share of its open bins;
    ``mask_fraction`` then removes bins as in pretraining (they stay targets of the state loss).
    ``contrastive_drop`` (not None) adds a second view of every cell, as in pretraining (see
    :func:`~atacformer.models.collate_cells`)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    idx = np.arange(len(cells)) if indices is None else np.asarray(indices)
    packed = model.device.type == "cuda"  # packed + flash on GPU; one padded SDPA call is faster on CPU
    if shuffle:
        idx = rng.permutation(idx)
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        group = [cells[i] if keep is None else subsample(cells[i], keep, rng) for i in chunk]
        batch = collate_cells(group, model.vocab, mask_fraction=mask_fraction,
                              max_length=model.config.max_length, rng=rng, packed=packed,
                              contrastive_drop=contrastive_drop, contrastive_neighbor_add=contrastive_neighbor_add)
        yield chunk, batch


def cls_states(model: Atacformer, batch: PackedBatch) -> torch.Tensor:
    """<cls> encoder outputs (B, d) with gradients (the decoder is skipped)."""
    h = model.encode(batch)  # (T, d)
    return h[batch.cls_index.to(h.device)]


@torch.no_grad()
def embed_cells(model: Atacformer, cells: list[dict], *, batch_size: int = 64) -> np.ndarray:
    """<cls> embeddings (n_cells, d) in eval mode, no masking."""
    return cls_outputs(model, cells, batch_size=batch_size)[0]


@torch.no_grad()
def cls_outputs(model: Atacformer, cells: list[dict], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(<cls> embeddings (n_cells, d), cell-type head softmax (n_cells, n_types) or None) in eval mode."""
    was_training = model.training
    model.eval()
    head = model.cell_type_head
    emb = np.zeros((len(cells), model.config.d_model), dtype=np.float32)
    probs = None if head is None else np.zeros((len(cells), model.config.n_cell_types), dtype=np.float32)
    for idx, batch in batches(cells, model, batch_size=batch_size):
        cls = cls_states(model, batch)  # (B, d)
        emb[idx] = cls.float().cpu().numpy()
        if head is not None:
            probs[idx] = torch.softmax(head(cls).float(), 1).cpu().numpy()
    model.train(was_training)
    return emb, probs


def freeze(model: nn.Module, *, trainable_last_layers: int | None = None, train_embeddings: bool = False) -> None:
    """Freeze the encoder except its last ``trainable_last_layers`` layers (None: all layers trainable).

    The genome-wide bin-ID table (vocab × k, ~10 M values at 5 kb) stays frozen unless
    ``train_embeddings``: a few thousand labelled cells touch only a small share of its rows, and
    updating (or weight-decaying) the whole table every step costs more than the rest of the model."""
    enc = model.encoder
    n = len(enc.layers)
    keep = n if trainable_last_layers is None else min(trainable_last_layers, n)
    for p in enc.parameters():
        p.requires_grad_(False)
    for layer in list(enc.layers)[n - keep :]:
        for p in layer.parameters():
            p.requires_grad_(True)
    if keep > 0:
        for p in enc.ln_f.parameters():
            p.requires_grad_(True)
    if train_embeddings:
        for p in enc.embed.parameters():
            p.requires_grad_(True)


def state_dict_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@contextmanager
def dropout_rate(model: nn.Module, p: float | None) -> Iterator[None]:
    """Temporarily set every dropout probability in ``model`` (``nn.Dropout`` modules and the attention
    layers' float ``dropout``) to ``p``; None leaves them as configured."""
    if p is None:
        yield
        return
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    saved = []
    for m in model.modules():
        attr = "p" if isinstance(m, nn.Dropout) else "dropout"
        if isinstance(getattr(m, attr, None), float):
            saved.append((m, attr, getattr(m, attr)))
            setattr(m, attr, p)
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)
