"""Shared plumbing for the fine-tuning tools: AnnData → cells → packed batches → <cls> embeddings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from ..models import Atacformer, PackedBatch, collate_cells
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


def batches(
    cells: list[dict], model: Atacformer, *, batch_size: int, mask_fraction: float = 0.0,
    rng: np.random.Generator | None = None, shuffle: bool = False, indices: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, PackedBatch]]:
    """(cell indices, packed batch) over ``indices`` (default all cells), shuffled with ``rng`` if asked."""
    rng = rng if rng is not None else np.random.default_rng(0)
    idx = np.arange(len(cells)) if indices is None else np.asarray(indices)
    packed = model.device.type == "cuda"  # packed + flash on GPU; one padded SDPA call is faster on CPU
    if shuffle:
        idx = rng.permutation(idx)
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        batch = collate_cells([cells[i] for i in chunk], model.vocab, mask_fraction=mask_fraction,
                              max_length=model.config.max_length, rng=rng, packed=packed)
        yield chunk, batch


def cls_states(model: Atacformer, batch: PackedBatch) -> torch.Tensor:
    """<cls> encoder outputs (B, d) with gradients (the decoder is skipped)."""
    h = model.encode(batch)  # (T, d)
    return h[batch.cls_index.to(h.device)]


@torch.no_grad()
def embed_cells(model: Atacformer, cells: list[dict], *, batch_size: int = 64) -> np.ndarray:
    """<cls> embeddings (n_cells, d) in eval mode, no masking."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(cells), model.config.d_model), dtype=np.float32)
    for idx, batch in batches(cells, model, batch_size=batch_size):
        out[idx] = cls_states(model, batch).float().cpu().numpy()
    model.train(was_training)
    return out


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
