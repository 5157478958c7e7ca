"""``AtacformerDataModule``: packed, reproducible batches from sharded corpora or an in-memory AnnData.

* Corpus folders stream: each rank reads its own shards (``CorpusDataset(rank=, world_size=)``), each
  DataLoader worker its own share of those; a shuffle buffer mixes cells across shards and corpora.
* An AnnData (or one ``.h5ad``) is held in memory and split train/val at random (seeded).

Batches are packed until ``max_tokens_per_batch`` tokens (default) or hold ``batch_size`` cells, and
are collated by :func:`atacformer.models.collate_cells` with a per-batch seeded RNG, so a run (and a
resumed run) sees exactly the same batches and masks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import scipy.sparse as sp
from torch.utils.data import DataLoader, get_worker_info

from ..models import collate_cells
from ..tokenize import AnnDataCellDataset, BinVocab, Corpus, CorpusDataset
from ..tokenize.sentences import DEFAULT_MAX_LENGTH
from .priors import bin_open_counts, cell_neighbors, grouped_neighbors
from .stream import PackedBatchStream, ResumingLoader

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("cell_type", "organ")


def _collate(cells: list[dict], rng: np.random.Generator, *, vocab: BinVocab, mask_fraction: float,
             max_length: int, contrastive_drop: float | None, contrastive_neighbor_add: float):
    return collate_cells(cells, vocab, mask_fraction=mask_fraction, max_length=max_length, rng=rng,
                         contrastive_drop=contrastive_drop, contrastive_neighbor_add=contrastive_neighbor_add)


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
                 neighbors: np.ndarray | None = None, groups: np.ndarray | None = None, block: int = 32):
        self.dataset, self.indices, self.neighbors = dataset, np.asarray(indices), neighbors
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.groups, self.block = groups, max(1, block)

    def _cell(self, i: int) -> dict:
        cell = self.dataset[i]
        if self.neighbors is not None:
            cell["neighbor_bin_ids"] = [self.dataset[int(j)]["bin_ids"] for j in self.neighbors[i]]
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
        for i in self._order(epoch):
            yield self._cell(int(i))


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
        for ds, remap in zip(self.datasets, self.remap):
            ds.set_epoch(epoch)
            for cell in ds:
                for col, table in remap.items():
                    cell[col] = int(table[cell[col]])
                yield cell


class AtacformerDataModule(L.LightningDataModule):
    """Training and validation batches for :class:`AtacformerModule`.

    Parameters
    ----------
    inputs
        Corpus folder(s) written by ``atacformer tokenize``, or one AnnData / ``.h5ad`` (cells × bins).
    val_inputs
        Corpus folder(s) for validation (corpus inputs only; an AnnData is split by ``val_fraction``).
    max_tokens_per_batch, batch_size
        Pack cells until this many tokens per batch (per rank), or use a fixed number of cells.
    batch_key
        ``obs`` column of an AnnData input naming each cell's sample or dataset: every training batch
        then holds cells of one group (so the contrastive loss contrasts cells of the same dataset, not
        datasets with each other), and the contrastive neighbours are found within each group.
    """

    def __init__(
        self,
        inputs: str | Path | ad.AnnData | Sequence[str | Path],
        *,
        val_inputs: Sequence[str | Path] | None = None,
        val_fraction: float = 0.05,
        max_tokens_per_batch: int | None = 16384,
        batch_size: int | None = None,
        mask_fraction: float = 0.15,
        max_length: int = DEFAULT_MAX_LENGTH,
        label_columns: Sequence[str] = LABEL_COLUMNS,
        num_workers: int = 0,
        shuffle_buffer: int = 1024,
        batch_key: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size is not None:
            max_tokens_per_batch = None
        self.max_tokens, self.batch_size = max_tokens_per_batch, batch_size
        self.mask_fraction, self.max_length = mask_fraction, max_length
        self.contrastive_drop: float | None = None  # set (with the next) from the model config by pretrain
        self.contrastive_neighbor_add = 0.0
        self.n_neighbors = 10  # neighbours per cell for that augmentation (in-memory AnnData only)
        self.neighbor_method = "tfidf"  # their graph (see priors.cell_neighbors)
        self._bin_counts: tuple[np.ndarray, int] | None = None
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed
        self.val_fraction = val_fraction
        self.adata: ad.AnnData | None = None
        self.corpora: list[Corpus] = []
        self.val_corpora: list[Corpus] = [Corpus(p) for p in (val_inputs or [])]
        if isinstance(inputs, ad.AnnData) or (isinstance(inputs, (str, Path)) and str(inputs).endswith(".h5ad")):
            self.adata = inputs if isinstance(inputs, ad.AnnData) else ad.read_h5ad(inputs)
            self._cells = AnnDataCellDataset(self.adata, label_keys=list(label_columns))
            self.vocab = self._cells.vocab
            self.label_names = {c: names for c, names in self._cells.label_names.items() if names}
        else:
            paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
            if any(str(p).endswith(".h5ad") for p in paths):
                raise ValueError("give either one .h5ad file or corpus folders, not a mix or several .h5ad files")
            self.corpora = [Corpus(p) for p in paths]
            if not self.corpora:
                raise ValueError("no training inputs given")
            self.vocab = self.corpora[0].vocab()
            for c in self.corpora[1:] + self.val_corpora:
                self.vocab.check_data({"genome": c.info.genome, "bin_size": c.info.bin_size}, what=str(c.path))
            self.label_names = _union_labels(self.corpora + self.val_corpora, label_columns)
        self.groups = self._group_codes(batch_key)
        self.train_idx, self.val_idx = self._split()
        self.rank, self.world_size, self.skip_batches = 0, 1, 0

    def _group_codes(self, batch_key: str | None) -> np.ndarray | None:
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
    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size

    def _source(self, train: bool):
        opts = dict(seed=self.seed, rank=self.rank, world_size=self.world_size, shuffle=train)
        if self.adata is not None:
            return _AnnDataSource(self._cells, self.train_idx if train else self.val_idx, neighbors=self._neighbors(),
                                  groups=self.groups, block=self._block(), **opts)
        return _CorpusSource(self.corpora if train else self.val_corpora, self.label_names,
                             shuffle_buffer=self.shuffle_buffer, **opts)

    @functools.cached_property
    def _neighbor_table(self) -> np.ndarray:
        log.info("contrastive views: %d nearest neighbours (%s) of %d cells%s", self.n_neighbors, self.neighbor_method,
                 len(self._cells), "" if self.groups is None else f", within {self.groups.max() + 1} groups")
        if self.groups is None:
            return cell_neighbors(self._cells.X, self.n_neighbors, method=self.neighbor_method, seed=self.seed)
        return grouped_neighbors(self._cells.X, self.groups, self.n_neighbors, method=self.neighbor_method,
                                 seed=self.seed)

    def _block(self) -> int:
        """Cells per single-group block of a grouped epoch: one batch (``batch_size``), or the cells that
        fill the token budget at the mean sentence length."""
        if self.batch_size is not None:
            return self.batch_size
        mean_len = 1 + float(np.diff(self._cells.X.indptr).mean()) + self.vocab.n_chroms
        return max(1, int(self.max_tokens // min(mean_len, self.max_length)))

    def _neighbors(self) -> np.ndarray | None:
        """Neighbour table (computed once) when the contrastive views add neighbour bins, else None."""
        if self.contrastive_drop is None or self.contrastive_neighbor_add <= 0 or len(self._cells) < 2:
            return None
        return self._neighbor_table

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
        collate = functools.partial(_collate, vocab=self.vocab, mask_fraction=self.mask_fraction,
                                    max_length=self.max_length, contrastive_drop=self.contrastive_drop,
                                    contrastive_neighbor_add=self.contrastive_neighbor_add)
        stream = PackedBatchStream(
            self._source(train), collate, n_chroms=self.vocab.n_chroms, max_length=self.max_length,
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
