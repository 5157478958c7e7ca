"""``tl.embed``: cell embeddings from a pretrained atacFormer, scanpy style (``obsm[key_added]``)."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import anndata as ad
import torch
from tqdm.auto import tqdm

from ..models import Atacformer
from ..train import encode_cells
from ..train.batcher import CELL_SUBSETS, adata_cells

log = logging.getLogger(__name__)

#: Subsets averaged per region set by default (``benchmarks/bulk.py``: accuracy stops rising there).
REGION_SET_SUBSETS = 8


def is_region_sets(adata: ad.AnnData) -> bool:
    """Whether ``adata`` holds region sets (one row per BED / narrowPeak file, ``atacformer ingest *.bed``)."""
    return str(dict(adata.uns.get("ingest", {})).get("kind", "")) == "bed"


def n_subsets_for(adata: ad.AnnData, n_subsets: int | None) -> int:
    """``n_subsets``, or for None the default: :data:`REGION_SET_SUBSETS` for region sets,
    :data:`~atacformer.train.batcher.CELL_SUBSETS` for cells (only cells longer than the model's sentence use it)."""
    if n_subsets is None:
        return REGION_SET_SUBSETS if is_region_sets(adata) else CELL_SUBSETS
    if int(n_subsets) < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    return int(n_subsets)


def _load(model: Atacformer | str | Path, device: str | torch.device | None) -> tuple[Atacformer, str]:
    if isinstance(model, Atacformer):
        return (model if device is None else model.to(device)), "<in memory>"
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"{path}: not a model directory (expected config.json and model.safetensors)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Atacformer.from_pretrained(path, map_location=device), str(path)


def embed(
    adata: ad.AnnData,
    model: Atacformer | str | Path,
    *,
    key_added: str = "X_atacformer",
    pooling: str = "cls",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
    n_subsets: int | None = None,
    progress: bool | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Embed every cell (or region set) of a cells × bins AnnData with an atacFormer.

    Parameters
    ----------
    adata
        Cells × bins, or region sets × bins (one row per BED file), as made by ``atacformer ingest``
        (``uns['genome']``/``uns['bin_size']`` must match the model's vocabulary, else ``ValueError``).
    model
        An :class:`~atacformer.models.Atacformer` or a directory written by ``save_pretrained``.
    pooling
        ``"cls"`` (the ``<cls>`` output) or ``"mean"`` (mean over the sentence's tokens).
    batch_size
        Cells per forward pass. Nothing is masked; a cell longer than the model's ``max_length`` is
        subsampled with a generator seeded by ``seed`` and the cell's own bins, so it gets the same
        embedding whatever tool or batch embeds it (:func:`atacformer.train.batcher.cell_rng`).
    device
        Default: the model's device (a loaded model goes to CUDA when available).
    seed
        Seed of that subsampling.
    n_subsets
        A row longer than ``max_length`` (a region set) gets the mean embedding of this many random subsets
        of its bins (each seeded by its content). None: :data:`REGION_SET_SUBSETS` for region sets from BED
        files (``uns['ingest']['kind'] == 'bed'``), else ``CELL_SUBSETS`` (4; cells that fit are read once).
    progress
        A progress bar (None = only on a terminal).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets ``obsm[key_added]`` (n_obs × d, float32) and ``uns[key_added]`` (parameters).
    """
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    model, source = _load(model, device)
    adata = adata.copy() if copy else adata
    cells = adata_cells(adata, model)
    n_subsets = n_subsets_for(adata, n_subsets)
    out, _ = encode_cells(model, cells, batch_size=batch_size, pooling=pooling, seed=seed, n_subsets=n_subsets,
                          progress=_bar(len(cells), batch_size, progress))
    adata.obsm[key_added] = out
    adata.uns[key_added] = {"model": source, "pooling": pooling, "genome": model.config.genome,
                            "bin_size": model.config.bin_size, "max_length": model.config.max_length, "seed": seed,
                            "n_subsets": n_subsets}
    log.info("embedded %d cells into obsm[%r] (%d dims, %s pooling)", adata.n_obs, key_added, out.shape[1], pooling)
    return adata if copy else None


def _bar(n_cells: int, batch_size: int, progress: bool | None):
    """A tqdm factory over the batches (shown on a terminal when ``progress`` is None)."""
    return functools.partial(tqdm, desc="embed", unit="batch", total=-(-n_cells // batch_size),
                             disable=not (sys.stderr.isatty() if progress is None else progress))
