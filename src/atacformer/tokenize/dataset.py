"""PyTorch datasets of cells: a streaming one over an on-disk corpus and an in-memory one over an AnnData.

Both yield the same dicts::

    {"bin_ids": int64 array (all open global bin ids, genomic order), "n_open": int, "cell_id": str,
     "row": int (index of the cell in the corpus / AnnData), "dataset": int, "cell_type": int, ...}

with each label column mapped to an int through its label vocabulary (sorted distinct values; -1 =
missing or unknown). Tokens are made from ``bin_ids`` by the collator (see
:func:`~atacformer.tokenize.cell_sentence`).

**Splitting** (:class:`CorpusDataset`). The unit of work is one Parquet row group (``row_group_size``
cells, default 1024; shards hold whole row groups). Each epoch the list of all row groups is (when
``shuffle``) permuted with a seed shared by all ranks, then dealt in that order to the ranks, each row
group to the rank with the fewest cells so far; DataLoader worker ``w`` of ``n`` takes every ``n``-th
row group of its rank. So every cell is read by exactly one (rank, worker) per epoch, and shards need
not divide evenly across ranks (a corpus with fewer shards than ranks still feeds them all). Ranks may
differ by up to one row group of cells; DDP needs equal batch counts, so pass ``drop_uneven=True`` to
cut every rank to the smallest rank's cell count (the few cells cut change from epoch to epoch when
shuffling).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .corpus import Corpus
from .sources import bins_of, global_columns, to_global
from .vocab import BinVocab

DEFAULT_SHUFFLE_BUFFER = 8192
DEFAULT_LABEL_KEYS = ("cell_type", "organ", "batch", "dataset")

Unit = tuple[int, int, int, int, int]  # (shard, row group, first corpus row, start, stop) rows of the group


def _codes(values, names: Sequence[str]) -> np.ndarray:
    """Label strings → int codes in ``names`` (-1 for null or a value not in ``names``)."""
    return pd.Categorical(values, categories=list(names)).codes.astype(np.int64)


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("pass both rank and world_size, or neither")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        return int(rank), int(world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class CorpusDataset(IterableDataset):
    """Stream the cells of a corpus, split across distributed ranks and DataLoader workers.

    Reads one row group at a time (memory ~ ``shuffle_buffer`` cells + one row group per worker) and
    shuffles within a buffer; the order depends on ``seed`` and the epoch (:meth:`set_epoch`).
    ``columns``: label columns to return (default: all of the corpus's). ``rank``/``world_size``
    default to ``torch.distributed``'s when it is initialised, else 0/1."""

    def __init__(
        self,
        corpus: Corpus | str | Path,
        *,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        columns: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        drop_uneven: bool = False,
    ):
        super().__init__()
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        self.columns = list(self.corpus.obs_columns if columns is None else columns)
        for c in self.columns:
            self.corpus.label_names(c)  # KeyError naming the available columns
        self.label_names = {c: self.corpus.label_names(c) for c in self.columns}
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, max(1, int(shuffle_buffer))
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.drop_uneven = drop_uneven
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffling order of ``epoch`` (call before each epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Cells this rank yields per epoch (over all its workers)."""
        return sum(stop - start for *_, start, stop in self.rank_units())

    def rank_units(self) -> list[Unit]:
        """The row groups (and row ranges within them) this rank reads this epoch."""
        units = self.corpus.row_group_units()
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
            units = [units[i] for i in order]
        per_rank = _balance(units, self.world_size)
        mine = [(s, g, first, 0, n) for s, g, first, n in per_rank[self.rank]]
        if not self.drop_uneven:
            return mine
        cap = min(sum(u[3] for u in rank_units) for rank_units in per_rank)
        kept, total = [], 0
        for s, g, first, start, stop in mine:
            take = min(stop - start, cap - total)
            if take <= 0:
                break
            kept.append((s, g, first, start, start + take))
            total += take
        return kept

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        units = self.rank_units()[worker::n_workers]
        cells = self._read(units)
        if not self.shuffle:
            yield from cells
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        yield from buffer_shuffle(cells, self.shuffle_buffer, rng)

    def _read(self, units: list[Unit]) -> Iterator[dict]:
        files: dict[int, pq.ParquetFile] = {}
        names = ["bin_ids", "n_open", "cell_id", *self.columns]
        for s, g, first, start, stop in units:
            if s not in files:
                files[s] = pq.ParquetFile(self.corpus.shards[s])
            table = files[s].read_row_group(g, columns=names).slice(start, stop - start)
            bins = table.column("bin_ids").combine_chunks()
            offsets, values = bins.offsets.to_numpy(), bins.values.to_numpy()
            n_open = table.column("n_open").to_numpy()
            cell_ids = table.column("cell_id").to_pylist()
            labels = {c: _codes(table.column(c).to_pylist(), self.label_names[c]) for c in self.columns}
            for i in range(table.num_rows):
                item = {"bin_ids": values[offsets[i] : offsets[i + 1]].astype(np.int64), "n_open": int(n_open[i]),
                        "cell_id": cell_ids[i], "row": first + start + i}
                item.update({c: int(codes[i]) for c, codes in labels.items()})
                yield item


def _balance(units: list, n: int) -> list[list]:
    """Deal units (``(..., n_rows)``) in order to ``n`` ranks, each to the rank with fewest rows so far
    (ties: lowest rank), so ranks differ by at most one unit's rows."""
    heap = [(0, r) for r in range(n)]
    out: list[list] = [[] for _ in range(n)]
    for unit in units:
        load, r = heapq.heappop(heap)
        out[r].append(unit)
        heapq.heappush(heap, (load + unit[-1], r))
    return out


def buffer_shuffle(items: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Approximate shuffle: keep ``size`` items, emit a random one as each new one arrives."""
    if size <= 1:
        yield from items
        return
    buffer: list[dict] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


class AnnDataCellDataset(Dataset):
    """Map-style dataset over a cells × bins AnnData in memory, yielding the same dicts as
    :class:`CorpusDataset`.

    ``label_names`` fixes the label vocabularies (e.g. ``{c: corpus.label_names(c)}`` or a
    :class:`Corpus`, so a fine-tuned head keeps its pretraining classes); by default each is the sorted
    distinct values of ``obs[key]``. Keys missing from ``obs`` give -1."""

    def __init__(
        self,
        adata: ad.AnnData,
        *,
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        label_names: Mapping[str, Sequence[str]] | Corpus | None = None,
    ):
        self.vocab = BinVocab.from_bins(bins_of(adata.uns, "AnnData"))
        cols = global_columns(adata.var, self.vocab.bins, "AnnData")  # None: all bins in order
        self.X = to_global(adata.X, cols, self.vocab.n_bins)  # cells × B CSR, columns = global bin ids
        self.cell_ids = adata.obs_names.to_numpy(dtype=str)
        if isinstance(label_names, Corpus):
            label_names = {c: label_names.label_names(c) for c in label_names.obs_columns}
        self.label_names: dict[str, list[str]] = {}
        self.labels: dict[str, np.ndarray] = {}
        for key in label_keys:
            values = adata.obs[key] if key in adata.obs else pd.Series([None] * adata.n_obs, dtype=object)
            if label_names is not None and key in label_names:
                names = list(label_names[key])
            else:
                names = sorted(values.dropna().astype(str).unique())
            self.label_names[key] = names
            strings = np.where(values.isna().to_numpy(), None, values.astype(str).to_numpy(dtype=object))
            self.labels[key] = _codes(strings, names)

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, i: int) -> dict:
        lo, hi = self.X.indptr[i], self.X.indptr[i + 1]
        item = {"bin_ids": self.X.indices[lo:hi].astype(np.int64), "n_open": int(hi - lo),
                "cell_id": str(self.cell_ids[i]), "row": int(i)}
        item.update({k: int(v[i]) for k, v in self.labels.items()})
        return item

