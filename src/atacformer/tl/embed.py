"""``tl.embed``: cell embeddings from a pretrained atacFormer, scanpy style (``obsm[key_added]``)."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from tqdm.auto import tqdm

from ..models import Atacformer, collate_cells
from ..tokenize import AnnDataCellDataset

log = logging.getLogger(__name__)


def _load(model: Atacformer | str | Path, device: str | torch.device | None) -> tuple[Atacformer, str]:
    if isinstance(model, Atacformer):
        return (model if device is None else model.to(device)), "<in memory>"
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"{path}: not a model directory (expected config.json and model.safetensors)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Atacformer.from_pretrained(path, map_location=device), str(path)


def _check_genome(adata: ad.AnnData, model: Atacformer) -> None:
    """A clear error when the cells are binned on another genome, bin size or chromosome set."""
    model.check_data(adata.uns, what="AnnData")
    sizes = adata.uns.get("chrom_sizes")
    if sizes is not None and {str(k): int(v) for k, v in dict(sizes).items()} != model.config.chrom_sizes:
        raise ValueError(
            f"AnnData chromosomes {list(dict(sizes))} differ from the model's {list(model.config.chrom_sizes)} "
            f"(genome {model.config.genome!r}, {model.config.bin_size} bp bins)")


def embed(
    adata: ad.AnnData,
    model: Atacformer | str | Path,
    *,
    key_added: str = "X_atacformer",
    pooling: str = "cls",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> None:
    """Embed every cell of a cells × bins AnnData with an atacFormer.

    Writes ``adata.obsm[key_added]`` (n_obs × d, float32) and ``adata.uns[key_added]`` (parameters).

    Parameters
    ----------
    adata
        Cells × bins, as made by ``atacformer ingest`` (``uns['genome']``/``uns['bin_size']`` must match
        the model's vocabulary, else ``ValueError``).
    model
        An :class:`~atacformer.models.Atacformer` or a directory written by ``save_pretrained``.
    pooling
        ``"cls"`` (the ``<cls>`` output) or ``"mean"`` (mean over the sentence's tokens).
    batch_size
        Cells per forward pass. Nothing is masked; cells longer than the model's ``max_length`` are
        subsampled with a generator seeded by ``seed`` and the batch index (reproducible).
    device
        Default: the model's device (a loaded model goes to CUDA when available).
    """
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    model, source = _load(model, device)
    _check_genome(adata, model)
    cells = AnnDataCellDataset(adata, label_keys=())
    vocab, max_length = model.vocab, model.config.max_length
    use_bf16 = model.device.type == "cuda"
    was_training = model.training
    model.eval()
    out = np.empty((adata.n_obs, model.config.d_model), dtype=np.float32)
    starts = range(0, adata.n_obs, batch_size)
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            for i, start in enumerate(tqdm(starts, desc="embed", unit="batch", disable=not progress)):
                batch = collate_cells([cells[j] for j in range(start, min(start + batch_size, adata.n_obs))], vocab,
                                      mask_fraction=0.0, max_length=max_length, rng=np.random.default_rng([seed, i]))
                emb = model.embed(batch.to(model.device), pooling=pooling)  # (B, d)
                out[start : start + len(emb)] = emb.float().cpu().numpy()
    finally:
        model.train(was_training)
    adata.obsm[key_added] = out
    adata.uns[key_added] = {"model": source, "pooling": pooling, "genome": model.config.genome,
                            "bin_size": model.config.bin_size, "max_length": max_length, "seed": seed}
    log.info("embedded %d cells into obsm[%r] (%d dims, %s pooling)", adata.n_obs, key_added, out.shape[1], pooling)
