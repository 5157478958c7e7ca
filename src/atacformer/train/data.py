"""``AtacformerDataModule``: packed, reproducible batches from sharded corpora or an in-memory AnnData.

* Corpus folders stream: each rank reads its own shards (``CorpusDataset(rank=, world_size=)``), each
  DataLoader worker its own share of those; a shuffle buffer mixes cells across shards and corpora.
* An AnnData (or one ``.h5ad``) is held in memory and split train/val at random (seeded).

Batches are packed until ``DataSettings.max_tokens`` tokens or hold ``DataSettings.batch_size`` cells,
and are made by the one batcher (:class:`~atacformer.train.batcher.BatchSettings`) with a per-batch
seeded RNG, so a run (and a resumed run) sees exactly the same batches and masks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
from torch.utils.data import DataLoader, get_worker_info

from ..io import read_h5ad
from ..tokenize import AnnDataCellDataset, BinVocab, Corpus, CorpusDataset
from ..tokenize.sentences import DEFAULT_MAX_LENGTH
from .batcher import BatchSettings
from .priors import bin_open_counts
from .stream import PackedBatchStream, ResumingLoader

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("cell_type", "organ")
#: ``batch_key="auto"`` uses the first of these obs columns that has at least two values
AUTO_BATCH_KEYS = ("batch", "sample", "library", "donor")


def auto_batch_key(adata: ad.AnnData | None) -> str | None:
    """The obs column ``batch_key="auto"`` stands for (:data:`AUTO_BATCH_KEYS`), or None (corpus inputs, or no such
    column with ≥ 2 values and none missing)."""
    if adata is None:
        return None
    for key in AUTO_BATCH_KEYS:
        if key in adata.obs and not adata.obs[key].isna().any() and adata.obs[key].astype(str).nunique() >= 2:
            log.info("batch_key='auto': training batches drawn from one obs[%r] value at a time", key)
            return key
    return None


@dataclass
class DataSettings:
    """How cells are grouped into batches and fed.

    Parameters
    ----------
    batch_size
        Cells per batch (per rank); None = pack up to ``max_tokens`` tokens instead.
    max_tokens
        Token budget of a packed batch (used when ``batch_size`` is None).
    val_fraction
        Held-out share of an in-memory AnnData (corpus inputs use ``val_inputs``).
    num_workers
        DataLoader workers per rank.
    shuffle_buffer
        Cells mixed across shards (corpus streaming).
    batch_key
        ``obs`` column of samples/datasets: every training batch holds cells of one of them. ``"auto"``: the
        first of :data:`AUTO_BATCH_KEYS` with ≥ 2 values (none: batches mix all cells).
    """

    batch_size: int | None = None
    max_tokens: int | None = 16384
    val_fraction: float = 0.05
    num_workers: int = 0
    shuffle_buffer: int = 1024
    batch_key: str | None = None


def _collate(cells: list[dict], rng: np.random.Generator, *, vocab: BinVocab, batch: BatchSettings, max_length: int,
             label_keys: Sequence[str]):
    return batch.collate(cells, vocab, rng, max_length=max_length, label_keys=label_keys)


class NeighborTables:
    """Per cell, the cells whose bins its contrastive view may borrow: one fixed table, or one table per
    epoch from ``provider(epoch)`` (computed when the stream first needs that epoch, kept in ``tables``
    so a checkpoint can save them and a resumed run sees the same views)."""

    def __init__(self):
        self.table, self.provider, self.tables = None, None, {}

    def for_epoch(self, epoch: int):
        if self.provider is None:
            return self.table
        if epoch not in self.tables:
            self.tables[epoch] = self.provider(epoch)
        return self.tables[epoch]


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _AnnDataSource:
    """Cells of an in-memory dataset, reshuffled every epoch, split by rank then by worker; with
    ``neighbors`` each cell also carries the bins of its nearest neighbours (``neighbor_bin_ids``).

    With ``groups`` (a code per cell, from ``batch_key``) an epoch is a shuffled sequence of blocks of
    ``block`` cells of one group each, and every cell carries its ``"group"``: the stream then never puts
    two groups in one batch (see :func:`~atacformer.train.stream.group_cells`)."""

    def __init__(self, dataset, indices: np.ndarray, *, seed: int, rank: int, world_size: int, shuffle: bool,
                 neighbors=None, groups: np.ndarray | None = None, block: int = 32,
                 codes: Mapping[str, np.ndarray] | None = None):
        self.dataset, self.indices, self.neighbors = dataset, np.asarray(indices), neighbors
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.groups, self.block, self.codes = groups, max(1, block), dict(codes or {})

    def _cell(self, i: int, table) -> dict:
        cell = self.dataset[i]
        cell.update({slot: int(c[i]) for slot, c in self.codes.items()})
        neighbors = None if table is None else table[i]
        if neighbors is not None and len(neighbors):
            cell["neighbor_bin_ids"] = [self.dataset[int(j)]["bin_ids"] for j in neighbors]
        if self.groups is not None:
            cell["group"] = int(self.groups[i])
        return cell

    def _order(self, epoch: int) -> np.ndarray:
        """This rank and worker's cells for ``epoch``."""
        worker, n_workers = _worker()
        idx = self.indices
        rng = np.random.default_rng([self.seed, epoch])
        if self.groups is None:
            idx = rng.permutation(idx) if self.shuffle else idx
            return idx[self.rank :: self.world_size][worker::n_workers]
        blocks = []
        for g in np.unique(self.groups[idx]):
            members = idx[self.groups[idx] == g]
            members = rng.permutation(members) if self.shuffle else members
            blocks += [members[i : i + self.block] for i in range(0, len(members), self.block)]
        if self.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        mine = blocks[self.rank :: self.world_size][worker::n_workers]
        return np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)

    def __call__(self, epoch: int) -> Iterator[dict]:
        table = None if self.neighbors is None else self.neighbors.for_epoch(epoch)
        for i in self._order(epoch):
            yield self._cell(int(i), table)


class _CorpusSource:
    """Cells of one or more corpora; each ``CorpusDataset`` splits its row groups by rank and worker.
    Label codes of every corpus are remapped onto the union of label names."""

    def __init__(self, corpora: list[Corpus], label_names: dict[str, list[str]], *, seed: int, rank: int,
                 world_size: int, shuffle: bool, shuffle_buffer: int):
        self.datasets, self.remap = [], []
        for c in corpora:
            cols = [col for col in label_names if col in c.info.labels]
            self.datasets.append(CorpusDataset(c, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                                               shuffle_buffer=max(1, shuffle_buffer), columns=cols))
            # local code -> union code; the extra last entry maps the missing code -1 to -1
            self.remap.append({col: np.array([label_names[col].index(n) for n in c.label_names(col)] + [-1])
                               for col in cols})

    def __call__(self, epoch: int) -> Iterator[dict]:
        for ds, remap in zip(self.datasets, self.remap, strict=False):
            ds.set_epoch(epoch)
            for cell in ds:
                for col, table in remap.items():
                    cell[col] = int(table[cell[col]])
                yield cell


class AtacformerDataModule(L.LightningDataModule):
    """Training and validation batches for every :class:`~atacformer.train.engine.TrainingPlan`.

    Parameters
    ----------
    inputs
        Corpus folder(s) written by ``atacformer tokenize``, or one AnnData / ``.h5ad`` (cells × bins).
    data
        :class:`DataSettings` (batch size or token budget, validation share, workers, ``batch_key``: every
        training batch then holds cells of one sample/dataset).
    batch
        :class:`~atacformer.train.batcher.BatchSettings` (masking, depth augmentation, contrastive views).
    max_length
        Longest sentence (the model's ``max_length``).
    val_inputs
        Corpus folder(s) for validation (corpus inputs only; an AnnData is split by ``data.val_fraction``).
    codes
        AnnData input: per-cell integer codes per label column (any names: they travel in
        ``batch.labels``) or ``"batch_label"`` (integration); -1 = missing. Instead of reading
        ``obs['cell_type'/'organ']``.
    split
        AnnData input: (train indices, validation indices) instead of a random split.
    val_batch
        How validation batches are made (default: as training batches, without depth augmentation).
    seed
        Seeds the split, the shuffling and every batch.
    """

    def __init__(
        self,
        inputs: str | Path | ad.AnnData | Sequence[str | Path],
        *,
        data: DataSettings | None = None,
        batch: BatchSettings | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        val_inputs: Sequence[str | Path] | None = None,
        codes: Mapping[str, np.ndarray] | None = None,
        split: tuple[np.ndarray, np.ndarray] | None = None,
        val_batch: BatchSettings | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.settings = data = data or DataSettings()
        self.batch = batch or BatchSettings()
        self.val_batch = val_batch  # None: like training batches, without depth augmentation
        self.max_tokens = None if data.batch_size is not None else data.max_tokens
        self.batch_size, self.max_length = data.batch_size, max_length
        self.num_workers, self.shuffle_buffer, self.seed = data.num_workers, data.shuffle_buffer, seed
        self.val_fraction, self.codes, self.neighbors = data.val_fraction, codes, NeighborTables()
        self._bin_counts: tuple[np.ndarray, int] | None = None
        self.adata: ad.AnnData | None = None
        self.corpora: list[Corpus] = []
        self.val_corpora: list[Corpus] = [Corpus(p) for p in (val_inputs or [])]
        if isinstance(inputs, ad.AnnData) or (isinstance(inputs, (str, Path)) and str(inputs).endswith(".h5ad")):
            self.adata = inputs if isinstance(inputs, ad.AnnData) else read_h5ad(inputs)
            self._cells = AnnDataCellDataset(self.adata, label_keys=[] if codes is not None else list(LABEL_COLUMNS))
            self.vocab = self._cells.vocab
            self.label_names = {c: names for c, names in self._cells.label_names.items() if names}
        else:
            paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
            if any(str(p).endswith(".h5ad") for p in paths):
                raise ValueError("give either one .h5ad file or corpus folders, not a mix or several .h5ad files")
            if codes is not None or split is not None:
                raise ValueError("codes= and split= need an in-memory AnnData input")
            self.corpora = [Corpus(p) for p in paths]
            if not self.corpora:
                raise ValueError("no training inputs given")
            self.vocab = self.corpora[0].vocab()
            for c in self.corpora[1:] + self.val_corpora:
                self.vocab.check_data({"genome": c.info.genome, "bin_size": c.info.bin_size}, what=str(c.path))
            self.label_names = _union_labels(self.corpora + self.val_corpora, LABEL_COLUMNS)
        self.label_keys = tuple(k for k in codes if k != "batch_label") if codes is not None else LABEL_COLUMNS
        self.groups = self._group_codes(data.batch_key)
        self.train_idx, self.val_idx = split if split is not None else self._split()
        self.rank, self.world_size, self.skip_batches = 0, 1, 0

    def fingerprint(self) -> dict:
        """What identifies the training data (for resume checks): sizes, and the cells' names and opens."""
        if self.adata is not None:
            X = self._cells.X
            return {"n_cells": int(X.shape[0]), "nnz": int(X.nnz), "genome": self.vocab.genome.name,
                    "first_cells": [str(c) for c in self._cells.cell_ids[:3]]}
        return {"corpora": [str(c.path.resolve()) for c in self.corpora], "genome": self.vocab.genome.name}

    def set_neighbors(self, neighbors=None, *, provider=None) -> None:
        """Per cell, the cells whose bins its contrastive view may borrow: an (n_cells, k) array or a
        list of index arrays (empty = none), or ``provider(epoch)`` returning one per epoch."""
        if self.adata is None:
            raise ValueError("contrastive neighbours need an in-memory AnnData input")
        self.neighbors.table, self.neighbors.provider = neighbors, provider

    def _group_codes(self, batch_key: str | None) -> np.ndarray | None:
        if batch_key == "auto":
            batch_key = auto_batch_key(self.adata)
        if batch_key is None:
            return None
        if self.adata is None:
            raise ValueError("batch_key needs an AnnData / .h5ad input (a corpus has no obs columns)")
        if batch_key not in self.adata.obs:
            raise ValueError(f"batch_key {batch_key!r} is not an obs column (have: {list(self.adata.obs.columns)})")
        values = self.adata.obs[batch_key]
        if values.isna().any():
            raise ValueError(f"obs[{batch_key!r}] has {int(values.isna().sum())} missing values")
        codes, names = pd.factorize(values.astype(str), sort=True)
        log.info("batches drawn from one %s at a time: %d groups (%s)", batch_key, len(names), ", ".join(names[:5]))
        return codes.astype(np.int64)

    def _split(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.adata is None:
            return None, None
        n = self.adata.n_obs
        perm = np.random.default_rng([self.seed, 7]).permutation(n)
        n_val = int(round(self.val_fraction * n)) if n > 1 else 0
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    # ---------------------------------------------------------------- Lightning hooks
    def use_vocab(self, vocab: BinVocab) -> None:
        """Make sentences for ``vocab`` (the model's: its decoder's ``<eos>`` tokens), which must hold the
        same bins as the data's."""
        if (vocab.bin_size != self.vocab.bin_size
                or dict(vocab.genome.chrom_sizes) != dict(self.vocab.genome.chrom_sizes)):
            raise ValueError(f"the model's vocabulary ({vocab}) has other bins than the data's ({self.vocab})")
        self.vocab = vocab

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
            vocab = getattr(getattr(self.trainer.lightning_module, "model", None), "vocab", None)
            if isinstance(vocab, BinVocab):  # sentences with the model's <eos> tokens
                self.use_vocab(vocab)

    def _source(self, train: bool):
        opts = dict(seed=self.seed, rank=self.rank, world_size=self.world_size, shuffle=train)
        if self.adata is not None:
            return _AnnDataSource(self._cells, self.train_idx if train else self.val_idx,
                                  neighbors=self.neighbors if self.batch.contrastive_drop is not None else None,
                                  groups=self.groups, block=self._block(), codes=self.codes, **opts)
        return _CorpusSource(self.corpora if train else self.val_corpora, self.label_names,
                             shuffle_buffer=self.shuffle_buffer, **opts)

    def _block(self) -> int:
        """Cells per single-group block of a grouped epoch: one batch (``batch_size``), or the cells that
        fill the token budget at the mean sentence length."""
        if self.batch_size is not None:
            return self.batch_size
        mean_len = 1 + float(np.diff(self._cells.X.indptr).mean()) + self.vocab.n_eos
        return max(1, int(self.max_tokens // min(mean_len, self.max_length)))

    def train_matrix(self) -> sp.csr_matrix | None:
        """Training cells × global bins (in-memory AnnData input), else None."""
        return None if self.adata is None else self._cells.X[self.train_idx]

    def bin_open_counts(self) -> tuple[np.ndarray, int]:
        """(n_bins,) training cells each bin is open in, and the number of training cells (for corpus
        inputs: all cells of the training corpora); computed once."""
        if self._bin_counts is None:
            self._bin_counts = bin_open_counts(self.train_matrix(), self.corpora, n_bins=self.vocab.n_bins)
        return self._bin_counts

    def _loader(self, train: bool) -> DataLoader:
        batch = self.batch if train else (self.val_batch or dataclasses.replace(self.batch, keep=None))
        collate = functools.partial(_collate, vocab=self.vocab, batch=batch, max_length=self.max_length,
                                    label_keys=self.label_keys)
        stream = PackedBatchStream(
            self._source(train), collate, n_chroms=self.vocab.n_eos, max_length=self.max_length,
            max_tokens=self.max_tokens, batch_size=self.batch_size, seed=self.seed + (0 if train else 1),
            rank=self.rank, endless=train,
            shuffle_buffer=self.shuffle_buffer if train and self.groups is None else 0,  # keep the blocks
            skip_batches=self.skip_batches if train else 0,
        )
        return ResumingLoader(stream, batch_size=None, num_workers=self._n_workers(train),
                          pin_memory=False, persistent_workers=False)

    def _n_workers(self, train: bool) -> int:
        """Every worker of an endless stream must own data: at most one worker per shard (or cell)."""
        if self.adata is not None:
            n = len(self.train_idx if train else self.val_idx) // self.world_size
        else:
            n = min(len(c.row_group_units()) for c in (self.corpora if train else self.val_corpora)) // self.world_size
        return max(0, min(self.num_workers, n))

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch.to(device)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None:  # called after a checkpoint is restored: skip what it already used
            self.skip_batches = int(getattr(self.trainer.lightning_module, "batches_seen", 0))
        if self.skip_batches:
            log.info("resuming data stream: skipping %d batches already used on rank %d", self.skip_batches, self.rank)
        return self._loader(train=True)

    @property
    def has_val(self) -> bool:
        """Whether every rank gets validation cells (else validation is skipped, on all ranks alike)."""
        if self.adata is not None:
            return len(self.val_idx) >= self.world_size
        return bool(self.val_corpora) and sum(len(c.row_group_units()) for c in self.val_corpora) >= self.world_size

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(train=False) if self.has_val else []


def _union_labels(corpora: list[Corpus], columns: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for col in columns:
        names = sorted({n for c in corpora if col in c.info.labels for n in c.label_names(col)})
        if names:
            out[col] = names
    return out
