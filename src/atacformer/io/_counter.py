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

from ..genome import BinIndex
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


class FragmentCounter:
    """Accumulates per-cell QC and spilled (cell, bin) counts over one or many fragment files."""

    def __init__(self, bins: BinIndex, *, counting: str = "insertion", whitelist: Iterable[str] | None = None,
                 tmp_dir: str | Path | None = None):
        if counting not in COUNTING:
            raise ValueError(f"counting must be one of {COUNTING}, got {counting!r}")
        self.bins, self.counting = bins, counting
        self.qc = qc_tables(bins)
        self.whitelist = None if whitelist is None else set(whitelist)
        self.stats = CellStats()
        self.store = RunStore(bins.n_bins, tmp_dir)
        self.cell_ids: dict[str, int] = {}  # obs name → global cell id (first-seen order)
        self.sample_starts: list[int] = []  # first cell id of each file
        self.contigs: Counter = Counter()  # unique fragments per contig name, all barcodes kept
        self.beyond_end = 0
        self.n_filtered_barcode = 0

    def add_file(self, path: str | Path, *, prefix: str = "", progress: Callable[[int], None] | None = None
                 ) -> None:
        """Count every fragment of ``path``; cell names are ``prefix + barcode``."""
        self.sample_starts.append(len(self.cell_ids))
        for chunk in iter_fragments(path, progress=progress):
            self.add_chunk(chunk, prefix=prefix)

    def _cells(self, names: list[str], prefix: str) -> np.ndarray:
        """Global cell id of each chunk-local barcode; -1 where the whitelist drops it."""
        ids, wl = self.cell_ids, self.whitelist
        out = np.empty(len(names), dtype=np.int64)
        for i, bc in enumerate(names):
            full = prefix + bc
            if wl is not None and bc not in wl and full not in wl:
                out[i] = -1
            else:
                out[i] = ids.setdefault(full, len(ids))
        return out

    def _chroms(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(chromosome index or -1, is-mito) of each chunk-local contig name."""
        genome = self.bins.genome
        idx = np.array([-1 if (c := genome.chrom_index(n)) is None else c for n in names], dtype=np.int64)
        mito = np.array([genome.is_mito(n) for n in names], dtype=bool)
        return idx, mito

    def add_chunk(self, chunk: FragmentChunk, *, prefix: str = "") -> None:
        cell = self._cells(chunk.barcode_names, prefix)[chunk.barcode_codes]  # (n,)
        chrom, start, end, count = chunk.chrom_codes, chunk.start, chunk.end, chunk.count
        if self.whitelist is not None:
            ok = cell >= 0
            self.n_filtered_barcode += int((~ok).sum())
            cell, chrom, start, end, count = cell[ok], chrom[ok], start[ok], end[ok], count[ok]
        per_contig = np.bincount(chrom, minlength=len(chunk.chrom_names))
        self.contigs.update({n: int(k) for n, k in zip(chunk.chrom_names, per_contig.tolist()) if k})
        st = self.stats
        st.grow(len(self.cell_ids))
        st.add("n_unique", cell)
        st.add("n_fragments", cell, count)
        cidx, mito = self._chroms(chunk.chrom_names)
        st.add("n_mito", cell[mito[chrom]])
        ci = cidx[chrom]
        main = ci >= 0
        if not main.all():
            cell, ci, start, end = cell[main], ci[main], start[main], end[main]
        inside = end <= self.bins.chrom_sizes[ci]
        if not inside.all():
            self.beyond_end += int((~inside).sum())
            cell, ci, start, end = cell[inside], ci[inside], start[inside], end[inside]
        self._add_main(cell, ci, start, end)

    def _add_main(self, cell: np.ndarray, ci: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        """QC and counts of fragments on modelled chromosomes. All arrays (n,)."""
        st, qc, bins = self.stats, self.qc, self.bins
        st.add("n_main", cell)
        length = end - start
        st.add("n_nfr", cell[length < NFR_MAX])
        st.add("n_mono", cell[(length >= NFR_MAX) & (length < MONO_MAX)])
        b1 = bins.offsets[ci] + start // bins.bin_size  # insertion bins
        b2 = bins.offsets[ci] + (end - 1) // bins.bin_size
        st.add("n_promoter", np.concatenate([cell[qc.promoter_bins[b1]], cell[qc.promoter_bins[b2]]]))
        if qc.has_genes:  # insertions (genome-linear) near a TSS: grid pre-filter, then exact windows
            lin = np.concatenate([qc.chrom_start[ci] + start, qc.chrom_start[ci] + end - 1])
            near = qc.tss_grid[lin >> GRID_SHIFT]
            lin, near_cell = lin[near], np.concatenate([cell, cell])[near]
            for field, (s, e) in (("tss_center", qc.center), ("tss_flank", qc.flank)):
                st.add(field, near_cell[_inside(s, e, lin)])
        pair_cells = np.repeat(cell, 2)  # (2n,) insertions interleaved: start, end - 1 of each fragment
        pair_bins = np.stack([b1, b2], axis=1).ravel()
        if self.counting == "fragment":  # the second end counts only in a different bin
            keep = np.ones(pair_bins.size, dtype=bool)
            keep[1::2] = b2 != b1
            pair_cells, pair_bins = pair_cells[keep], pair_bins[keep]
        self.store.add(pair_cells, pair_bins, st.n)

    def close(self) -> None:
        self.store.close()
