"""Reproducible streams of packed batches: cells → token-budget groups → ``collate_cells``.

Every DataLoader worker runs one :class:`PackedBatchStream`. Its cells come from a *cell source*
(a sharded corpus or an in-memory AnnData), already split by rank and worker. The training stream is
endless (epoch after epoch, reshuffled), so the DataLoader hands out batches strictly round-robin over
its workers: global batch ``i`` is local batch ``i // W`` of worker ``i % W``. That makes every batch
a pure function of (seed, rank, i) and lets a resumed run skip exactly the batches it already used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..tokenize.dataset import buffer_shuffle

log = logging.getLogger(__name__)

CellSource = Callable[[int], Iterator[dict]]  # epoch -> this worker's cells for that epoch


def sentence_length(cell: dict, n_chroms: int, max_length: int) -> int:
    """Tokens the cell's sentence takes before masking: ``<cls>`` + open bins + ``n_chroms`` ``<eos>`` (one per
    region of the decoder: ``BinVocab.n_eos``)."""
    return min(1 + len(cell["bin_ids"]) + n_chroms, max_length)


def group_cells(
    cells: Iterator[dict], *, n_chroms: int, max_length: int, max_tokens: int | None, batch_size: int | None
) -> Iterator[list[dict]]:
    """Group cells into batches: pack until ``max_tokens`` tokens (token budget) or ``batch_size`` cells.

    A cell longer than the whole budget still forms a batch of its own. Cells that carry a ``"group"``
    (``batch_key``) end the batch when the group changes: a batch never mixes groups."""
    if (max_tokens is None) == (batch_size is None):
        raise ValueError("give exactly one of max_tokens (token budget) or batch_size (cells per batch)")
    group: list[dict] = []
    tokens = 0
    for cell in cells:
        n = sentence_length(cell, n_chroms, max_length)
        if group and ((max_tokens is not None and tokens + n > max_tokens) or len(group) == batch_size
                      or cell.get("group") != group[0].get("group")):
            yield group
            group, tokens = [], 0
        group.append(cell)
        tokens += n
    if group:
        yield group


class PackedBatchStream(IterableDataset):
    """Packed batches from a cell source, collated with a per-batch seeded RNG (masking is reproducible).

    Parameters
    ----------
    source
        ``source(epoch)`` yields the cells of this rank and DataLoader worker for that epoch.
    collate
        ``collate(cells, rng)`` → a batch (``collate_cells`` with vocab and masking bound).
    endless
        Training streams repeat epochs forever (the Trainer stops at ``max_steps``); validation
        streams make one pass.
    skip_batches
        Global batches of this rank already consumed (set when resuming from a checkpoint).
    """

    def __init__(
        self,
        source: CellSource,
        collate: Callable[[list[dict], np.random.Generator], object],
        *,
        n_chroms: int,
        max_length: int,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        endless: bool = True,
        shuffle_buffer: int = 0,
        skip_batches: int = 0,
    ):
        super().__init__()
        self.source, self.collate = source, collate
        self.n_chroms, self.max_length = n_chroms, max_length
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.seed, self.rank, self.endless = seed, rank, endless
        self.shuffle_buffer, self.skip_batches = shuffle_buffer, skip_batches

    def _groups(self, worker: int) -> Iterator[list[dict]]:
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, self.rank, worker, epoch, 1])
            cells = buffer_shuffle(self.source(epoch), self.shuffle_buffer, rng)
            n = 0
            for group in group_cells(cells, n_chroms=self.n_chroms, max_length=self.max_length,
                                     max_tokens=self.max_tokens, batch_size=self.batch_size):
                n += 1
                yield group
            if not self.endless:
                return
            if n == 0:
                raise ValueError(f"rank {self.rank} worker {worker}: the data source yielded no cells")
            epoch += 1

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # global batch i = local batch i // W of worker i % W (round-robin). A DataLoader always starts
        # at worker 0, so every worker resumes at the round of batch k, and the loader drops the
        # first k % W batches (see ResumingLoader): the stream continues at exactly batch k.
        skip = self.skip_batches // n_workers
        for local, cells in enumerate(self._groups(worker)):
            if local < skip:
                continue
            step = local * n_workers + worker  # global batch index on this rank
            yield self.collate(cells, np.random.default_rng([self.seed, self.rank, step, 2]))


class ResumingLoader(DataLoader):
    """A DataLoader over a :class:`PackedBatchStream` that starts at its ``skip_batches``-th batch."""

    def __iter__(self):
        it = super().__iter__()
        n_workers = max(1, self.num_workers)
        for _ in range(self.dataset.skip_batches % n_workers):
            next(it)
        return it
