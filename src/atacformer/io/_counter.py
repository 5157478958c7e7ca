"""Chunk-by-chunk binning of fragments: barcodes → cell ids, contigs → chromosomes, Tn5 insertions → bins.

Counting modes (each unique fragment once; the count column only feeds the duplication QC):

- ``insertion`` (default, as SnapATAC2): one insertion at ``start`` and one at ``end − 1``; both count, so a
  fragment inside one bin adds 2 to it.
- ``fragment``: the fragment adds 1 to each bin holding one of its ends (1 or 2 bins for fragments
  shorter than a bin).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..genome import BinIndex
from ._build import PositionSample
from ._dups import DuplicateLines
from ._qc import GRID_SHIFT, MONO_MAX, NFR_MAX, CellStats, QCTables, _inside
from ._runs import RunStore
from .fragments import FragmentChunk, iter_fragments

COUNTING = ("insertion", "fragment")


@lru_cache(maxsize=8)
def _qc_tables(bins_key: tuple, bins: BinIndex) -> QCTables:
    del bins_key  # cache key only
    return QCTables(bins)


def qc_tables(bins: BinIndex) -> QCTables:
    key = (bins.genome.name, tuple(bins.genome.chrom_sizes.items()), str(bins.genome.genes_path), bins.bin_size)
    return _qc_tables(key, bins)


class CellIds:
    """Barcode → global cell id (first-seen order), looked up a chunk dictionary at a time.

    Known names sit in a pandas Index (a C hash table); names seen since its last rebuild sit in a dict. The
    Index is rebuilt when the dict outgrows a quarter of it, so lookups cost O(chunk dictionary) and rebuilds
    O(total) over a whole file."""

    def __init__(self):
        self.names: list[str] = []
        self._index = pd.Index([], dtype=object)
        self._recent: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def ids(self, names: list[str]) -> np.ndarray:
        """(k,) int32 ids of ``names``, new names getting the next ids."""
        out = self._index.get_indexer(np.array(names, dtype=object))
        missing = np.flatnonzero(out < 0)
        if missing.size:
            recent, known = self._recent, self.names
            for i in missing.tolist():
                name = names[i]
                j = recent.get(name)
                if j is None:
                    j = recent[name] = len(known)
                    known.append(name)
                out[i] = j
            if len(recent) > 64 + len(self._index) // 4:
                self._index, self._recent = pd.Index(known, dtype=object), {}
        return out.astype(np.int32)


class FragmentCounter:
    """Accumulates per-cell QC and spilled (cell, bin) counts over one or many fragment files."""

    def __init__(self, bins: BinIndex, *, counting: str = "insertion", whitelist: Iterable[str] | None = None,
                 tmp_dir: str | Path | None = None):
        if counting not in COUNTING:
            raise ValueError(f"counting must be one of {COUNTING}, got {counting!r}")
        self.bins, self.counting = bins, counting
        self.qc = qc_tables(bins)
        self.whitelist = None if whitelist is None else pd.Index(list(whitelist), dtype=object)
        self.stats = CellStats()
        self.store = RunStore(bins.n_bins, tmp_dir)
        self.cells = CellIds()  # obs names (prefix + barcode) → global cell id
        self.sample_starts: list[int] = []  # first cell id of each file
        self.contigs: Counter = Counter()  # unique fragments per contig name, all barcodes kept
        self.beyond_end = 0
        self.n_filtered_barcode = 0
        self.duplicates = DuplicateLines()
        self.positions = PositionSample()  # insertions (all contigs), for the genome-build check
        self._contig_ids: dict[str, int] = {}
        self._offsets = bins.offsets.astype(np.int32 if bins.n_bins < 2**31 else np.int64)
        self._sizes = bins.chrom_sizes.astype(np.int64)

    @property
    def cell_names(self) -> list[str]:
        return self.cells.names

    def add_file(self, path: str | Path, *, prefix: str = "", progress: Callable[[int], None] | None = None
                 ) -> None:
        """Count every fragment of ``path``; cell names are ``prefix + barcode``."""
        self.sample_starts.append(len(self.cells))
        n = 0
        for chunk in iter_fragments(path, progress=progress):
            self.add_chunk(chunk, prefix=prefix)
            n += len(chunk)
        if n == 0:
            raise ValueError(f"{path}: no fragment records (empty or header-only file)")

    def _cell_lut(self, names: list[str], prefix: str) -> np.ndarray:
        """(k,) int32 global cell id of each chunk-local barcode; -1 where the whitelist drops it."""
        full = [prefix + bc for bc in names] if prefix else names
        if self.whitelist is None:
            return self.cells.ids(full)
        ok = pd.Index(names).isin(self.whitelist) | pd.Index(full).isin(self.whitelist)
        out = np.full(len(names), -1, dtype=np.int32)
        keep = np.flatnonzero(ok)
        out[keep] = self.cells.ids([full[i] for i in keep.tolist()])
        return out

    def _chrom_lut(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(chromosome index or -1, is-mito) of each chunk-local contig name."""
        genome = self.bins.genome
        idx = np.array([-1 if (c := genome.chrom_index(n)) is None else c for n in names], dtype=np.int32)
        mito = np.array([genome.is_mito(n) for n in names], dtype=bool)
        return idx, mito

    def add_chunk(self, chunk: FragmentChunk, *, prefix: str = "") -> None:
        cell = self._cell_lut(chunk.barcode_names, prefix)[chunk.barcode_codes]  # (n,) int32
        chrom, start, end, count = chunk.chrom_codes, chunk.start, chunk.end, chunk.count
        if self.whitelist is not None:
            ok = cell >= 0
            self.n_filtered_barcode += int(ok.size - np.count_nonzero(ok))
            cell, chrom, start, end, count = cell[ok], chrom[ok], start[ok], end[ok], count[ok]
        contig_ids = np.array([self._contig_ids.setdefault(n, len(self._contig_ids)) for n in chunk.chrom_names],
                              dtype=np.int64)
        self.duplicates.add(cell, contig_ids[chrom], start, end)
        self.positions.add(chunk.chrom_names, chrom, start)
        per_contig = np.bincount(chrom, minlength=len(chunk.chrom_names))
        self.contigs.update({n: int(k) for n, k in zip(chunk.chrom_names, per_contig.tolist(), strict=False) if k})
        st = self.stats
        st.grow(len(self.cells))
        st.add("n_unique", cell)
        st.add("n_fragments", cell, count)
        cidx, mito = self._chrom_lut(chunk.chrom_names)
        if mito.any():
            st.add("n_mito", cell[mito[chrom]])
        ci = cidx[chrom]  # (n,) int32
        if (cidx < 0).any():
            main = ci >= 0
            cell, ci, start, end = cell[main], ci[main], start[main], end[main]
        inside = end <= self._sizes[ci]
        if not inside.all():
            self.beyond_end += int(inside.size - np.count_nonzero(inside))
            cell, ci, start, end = cell[inside], ci[inside], start[inside], end[inside]
        self._add_main(cell, ci, start, end)

    def _add_main(self, cell: np.ndarray, ci: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        """QC and counts of fragments on modelled chromosomes. All arrays (n,)."""
        st, qc = self.stats, self.qc
        last = end - 1  # the second insertion
        length = end - start
        st.add_lengths(cell, (length >= NFR_MAX).view(np.uint8) + (length >= MONO_MAX).view(np.uint8))
        off = self._offsets[ci]
        b1 = off + start // self.bins.bin_size  # (n,) insertion bins
        b2 = off + last // self.bins.bin_size
        in_promoter = [np.flatnonzero(qc.promoter_bins[b]) for b in (b1, b2)]  # few: ~10% of insertions
        st.add("n_promoter", np.concatenate([cell[i] for i in in_promoter]))
        if qc.has_genes:
            self._add_tss(cell, ci, start, last)
        self.store.add(cell, b1, b2, st.n, same_bin_count=2 if self.counting == "insertion" else 1)

    def _add_tss(self, cell: np.ndarray, ci: np.ndarray, start: np.ndarray, last: np.ndarray) -> None:
        """Insertions in the TSS centre and flank windows: a 1 kb grid pre-filter, then exact binary search."""
        qc, grid = self.qc, self.qc.grid_offset[ci]
        hits_cell, hits_lin = [], []
        for pos in (start, last):
            near = np.flatnonzero(qc.tss_grid[grid + (pos >> GRID_SHIFT)])
            hits_cell.append(cell[near])
            hits_lin.append(qc.chrom_start[ci[near]] + pos[near])
        near_cell, lin = np.concatenate(hits_cell), np.concatenate(hits_lin)
        for field, (s, e) in (("tss_center", qc.center), ("tss_flank", qc.flank)):
            self.stats.add(field, near_cell[_inside(s, e, lin)])

    def close(self) -> None:
        self.store.close()
