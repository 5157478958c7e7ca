"""The one batcher: cells → packed batches, for training and for inference.

A *cell* is a dict ``{"bin_ids": open global bin ids, "<label column>": int code, ...}`` (see
:mod:`atacformer.tokenize.dataset`). :class:`BatchSettings` says how training batches are made from
cells (masking, depth augmentation, contrastive second views); :func:`collate_cells` packs them.

Seeding rule. Training batches are collated with a generator seeded by (seed, rank, batch index)
(:class:`~atacformer.train.stream.PackedBatchStream`), so a resumed run sees the same masks. Inference
seeds every cell from its own content (:func:`cell_rng`): a cell longer than ``max_length`` gets the
same subsample, hence the same embedding, whichever tool embeds it and whatever batch it lands in.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..models import Atacformer, PackedBatch, collate_cells
from ..models.batch import DEFAULT_LABEL_KEYS, mask_bins
from ..tokenize import AnnDataCellDataset
from ..tokenize.sentences import sorted_unique
from ..tokenize.vocab import BinVocab


@dataclass(frozen=True)
class BatchSettings:
    """How training batches are made from cells.

    Parameters
    ----------
    mask_fraction
        Share of each cell's open bins removed from its sentence (targets of the masked-bin loss).
    keep
        Depth augmentation: (lo, hi) = each cell first keeps a uniform-random share in [lo, hi] of its
        open bins (the dropped bins look closed, as in a shallower cell). None = off.
    contrastive_drop
        Not None: every cell also gets a second view with this share of its bins dropped (and, for
        cells that carry ``neighbor_bin_ids``, ``neighbor_add`` of one neighbour's extra bins added).
    neighbor_add
        Share of a neighbour's extra bins added to the second view.
    train_length
        Cap every training sentence (both views) at this many tokens: a long cell is subsampled to a
        fresh random subset of its bins at every step (the rest become "open but removed" targets).
        Attention costs grow with the square of the length; None = the model's ``max_length``.
    """

    mask_fraction: float = 0.15
    keep: tuple[float, float] | None = None
    contrastive_drop: float | None = None
    neighbor_add: float = 0.0
    train_length: int | None = None

    def __post_init__(self):
        if not 0 <= self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in [0, 1), got {self.mask_fraction}")
        if self.keep is not None and not 0 < self.keep[0] <= self.keep[1] <= 1:
            raise ValueError(f"keep must be (lo, hi) with 0 < lo <= hi <= 1, got {self.keep}")
        if self.contrastive_drop is not None and not 0 <= self.contrastive_drop < 1:
            raise ValueError(f"contrastive_drop must be in [0, 1), got {self.contrastive_drop}")
        if not 0 <= self.neighbor_add <= 1:
            raise ValueError(f"neighbor_add must be in [0, 1], got {self.neighbor_add}")
        if self.train_length is not None and self.train_length < 32:
            raise ValueError(f"train_length must be >= 32 tokens (or None), got {self.train_length}")

    def collate(self, cells: list[dict], vocab: BinVocab, rng: np.random.Generator, *, max_length: int,
                packed: bool = True, label_keys: Sequence[str] = DEFAULT_LABEL_KEYS) -> PackedBatch:
        """One training batch of ``cells`` (augmented, masked, with second views as configured).

        A cell with more (kept, unmasked) open bins than fit in ``max_length`` tokens — a bulk region set —
        is read through a uniform random subset of them drawn from ``rng``, the batch's own generator:
        every batch draws a fresh subset (the bins left out are state-2 targets, open but unseen)."""
        if self.keep is not None:
            cells = [subsample(c, self.keep, rng) for c in cells]
        if self.train_length is not None:
            max_length = min(max_length, self.train_length)
        return collate_cells(cells, vocab, mask_fraction=self.mask_fraction, max_length=max_length, rng=rng,
                             packed=packed, contrastive_drop=self.contrastive_drop,
                             contrastive_neighbor_add=self.neighbor_add, label_keys=label_keys)


def subsample(cell: dict, keep: tuple[float, float], rng: np.random.Generator) -> dict:
    """``cell`` with a uniform-random share in ``keep`` = (lo, hi) of its open bins (at least one kept)."""
    bins = np.asarray(cell["bin_ids"], dtype=np.int64)
    fraction = float(rng.uniform(*keep))
    kept = mask_bins(bins, min(1.0 - fraction, 1.0 - 1.0 / max(len(bins), 1)), rng)
    return {**cell, "bin_ids": kept}


def cell_rng(bin_ids: np.ndarray, seed: int = 0, subset: int = 0) -> np.random.Generator:
    """The inference generator of one cell: seeded by ``seed``, a CRC-32 of its sorted open bins and, for
    the extra subsets of a long cell (``subset`` ≥ 1, see :func:`encode_cells`), the subset number."""
    crc = zlib.crc32(np.ascontiguousarray(np.sort(np.asarray(bin_ids, dtype=np.int64))).tobytes())
    return np.random.default_rng([int(seed), crc] + ([int(subset)] if subset else []))


def check_adata(adata, model: Atacformer) -> None:
    """A clear ``ValueError`` when a cells (or region sets) × bins AnnData's genome, bin size or chromosome
    set differ from the model's, or (a model with region classes) when ``var['region_class']`` holds another
    class set."""
    model.check_data(adata.uns, what="AnnData")
    if model.config.region_classes and "region_class" in adata.var:
        model.vocab.check_region_classes(pd.Categorical(adata.var["region_class"]).categories,
                                         what="AnnData var['region_class']")
    sizes = adata.uns.get("chrom_sizes")
    if sizes is not None and {str(k): int(v) for k, v in dict(sizes).items()} != model.config.chrom_sizes:
        raise ValueError(
            f"AnnData chromosomes {list(dict(sizes))} differ from the model's {list(model.config.chrom_sizes)} "
            f"(genome {model.config.genome!r}, {model.config.bin_size} bp bins)")


def adata_cells(adata, model: Atacformer) -> list[dict]:
    """``{"bin_ids": open global bin ids}`` per cell of a cells × bins AnnData (checked: :func:`check_adata`)."""
    check_adata(adata, model)
    ds = AnnDataCellDataset(adata, label_keys=[])
    X = ds.X
    return [{"bin_ids": X.indices[X.indptr[i] : X.indptr[i + 1]].astype(np.int64)} for i in range(X.shape[0])]


def inference_batches(cells: Sequence[dict], vocab: BinVocab, *, batch_size: int, max_length: int, seed: int = 0,
                      packed: bool = True, subset: int = 0) -> Iterator[tuple[np.ndarray, PackedBatch]]:
    """(cell indices, unmasked batch) over ``cells`` in order, each cell seeded by :func:`cell_rng`
    (``subset``: which of a long cell's random subsets of ``max_length`` tokens)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(cells), batch_size):
        chunk = list(cells[start : start + batch_size])
        rngs = [cell_rng(c["bin_ids"], seed, subset) for c in chunk]
        batch = collate_cells(chunk, vocab, mask_fraction=0.0, max_length=max_length, rng=rngs, packed=packed,
                              label_keys=())
        yield np.arange(start, start + len(chunk)), batch


#: Subsets averaged for a cell longer than the model's sentence (10x-depth cells; benchmarks/RESULTS.md
#: "realistic": fine-type ARI 0.36 with one 512-token subset, 0.40 with 4, no gain from 8 or 16)
CELL_SUBSETS = 4


@dataclass(frozen=True)
class InferenceSettings:
    """How cells are read at inference: whole sentences of up to ``subset_length`` tokens (None = the
    model's ``max_length``; shorter is cheaper: attention grows with the square of the length), and a cell
    that does not fit (a bulk region set) as the mean over ``n_subsets`` random subsets of its bins, each
    seeded by the cell's content and the subset number (:func:`cell_rng`)."""

    subset_length: int | None = None
    n_subsets: int = CELL_SUBSETS

    def __post_init__(self):
        if self.n_subsets < 1:
            raise ValueError(f"n_subsets must be >= 1, got {self.n_subsets}")
        if self.subset_length is not None and self.subset_length < 32:
            raise ValueError(f"subset_length must be >= 32 tokens (or None), got {self.subset_length}")


def long_cells(cells: Sequence[dict], vocab: BinVocab, max_length: int) -> np.ndarray:
    """Indices of the cells with more open bins than fit in one sentence of ``max_length`` tokens."""
    room = max_length - 1 - vocab.n_eos
    return np.array([i for i, c in enumerate(cells) if len(sorted_unique(c["bin_ids"])) > room], dtype=np.int64)


@torch.inference_mode()
def _encode_pass(model: Atacformer, cells: Sequence[dict], *, batch_size: int, pooling: str, seed: int,
                 subset: int, progress, max_length: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One pass over ``cells``: embeddings (n, d) and each head's softmax (n, n_classes)."""
    emb = np.zeros((len(cells), model.config.d_model), dtype=np.float32)
    probs = {col: np.zeros((len(cells), len(names)), dtype=np.float32) for col, names in model.config.heads.items()}
    packed = model.device.type == "cuda"  # packed + flash on GPU; one padded SDPA call is faster on CPU
    batches = inference_batches(cells, model.vocab, batch_size=batch_size, max_length=max_length,
                                seed=seed, packed=packed, subset=subset)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=model.device.type == "cuda"):
        for idx, batch in (progress(batches) if progress else batches):
            batch = batch.to(model.device)
            h = model.embed(batch, pooling=pooling)  # (B, d)
            emb[idx] = h.float().cpu().numpy()
            if probs:
                cls = h if pooling == "cls" else model.embed(batch, pooling="cls")
                for col, head in model.heads.items():
                    probs[col][idx] = torch.softmax(head(cls).float(), 1).cpu().numpy()
    return emb, probs


def encode_cells(model: Atacformer, cells: Sequence[dict], *, batch_size: int = 64, pooling: str = "cls",
                 seed: int = 0, n_subsets: int | None = None, progress=None,
                 inference: InferenceSettings | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cell embeddings (n_cells, d) and, per head column, the head's softmax (n_cells, n_classes).

    Eval mode, nothing masked, bf16 autocast on CUDA; ``progress`` wraps the batch iterator (e.g. tqdm).
    A cell with more open bins than fit in one sentence (a bulk region set) is read through ``n_subsets``
    random subsets of its bins (subset 0 is the one a single pass uses; each is seeded by the cell's own
    bins, :func:`cell_rng`): its embedding and probabilities are the means over them. Cells that fit are
    read once. ``n_subsets`` None = :data:`CELL_SUBSETS`. ``inference`` (:class:`InferenceSettings`) also sets
    a shorter sentence length; it then carries the subset count (``n_subsets`` must stay None)."""
    if inference is not None and n_subsets is not None:
        raise ValueError("give the subset count once: InferenceSettings(n_subsets=...) or n_subsets=")
    inf = inference or InferenceSettings(n_subsets=CELL_SUBSETS if n_subsets is None else n_subsets)
    length = min(inf.subset_length or model.config.max_length, model.config.max_length)
    n_subsets = inf.n_subsets
    was_training = model.training
    model.eval()
    opts = dict(batch_size=batch_size, pooling=pooling, seed=seed, max_length=length)
    try:
        emb, probs = _encode_pass(model, cells, subset=0, progress=progress, **opts)
        long = long_cells(cells, model.vocab, length) if n_subsets > 1 else np.zeros(0, np.int64)
        if len(long):
            subset_cells = [cells[i] for i in long]
            for s in range(1, n_subsets):
                e, p = _encode_pass(model, subset_cells, subset=s, progress=None, **opts)
                emb[long] += e
                for col in probs:
                    probs[col][long] += p[col]
            emb[long] /= n_subsets
            for col in probs:
                probs[col][long] /= n_subsets
    finally:
        model.train(was_training)
    return emb, probs
