"""Per-cell fragment QC, accumulated chunk by chunk in O(cells) memory.

Definitions (all from unique fragments, i.e. rows of the fragments file, unless said otherwise):

- ``n_fragments``: read pairs (sum of the count column, duplicates included);
  ``n_unique``: unique fragments; ``duplication_rate`` = 1 − n_unique / n_fragments.
- ``frac_mito``: unique fragments on chrM / n_unique.
- ``nucleosome_signal``: mono-nucleosomal (147–293 bp) / nucleosome-free (< 147 bp) fragments, as in Signac.
- ``tss_enrichment`` (ArchR style): Tn5 insertions within ±50 bp of a TSS per bp, divided by insertions
  1,900–2,000 bp either side of a TSS per bp (flank count floored at 1).
- ``n_main``: unique fragments on the modelled chromosomes (each gives 2 insertions).
- ``frac_promoter``: insertions in promoter bins (bins overlapping −2 kb…+0.5 kb of a TSS) / insertions
  on the modelled chromosomes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..genome import BinIndex

TSS_CENTER = 50  # |d| <= 50 bp: 101 bp
TSS_FLANK = (1900, 2000)  # 1900 <= |d| <= 2000: 2 x 101 bp
PROMOTER = (2000, 500)  # upstream, downstream of the TSS
NFR_MAX, MONO_MAX = 147, 294
GRID_SHIFT = 10  # 1 kb grid per chromosome: cheap pre-filter of the exact TSS window lookups
STAT_FIELDS = ("n_fragments", "n_unique", "n_mito", "n_nfr", "n_mono", "n_main", "n_promoter",
               "tss_center", "tss_flank")


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals, as sorted disjoint (starts, ends)."""
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], np.maximum.accumulate(ends[order])
    new = np.concatenate([[True], s[1:] > e[:-1]])
    group_end = np.concatenate([np.flatnonzero(new)[1:] - 1, [s.size - 1]])
    return s[new], e[group_end]


def _inside(starts: np.ndarray, ends: np.ndarray, x: np.ndarray) -> np.ndarray:
    i = np.searchsorted(starts, x, side="right") - 1
    return (i >= 0) & (x < ends[np.maximum(i, 0)])


def _cover(first: np.ndarray, last: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool mask of the positions covered by the closed ranges [first, last] (all within 0..n-1)."""
    diff = np.zeros(n + 1, dtype=np.int32)
    np.add.at(diff, first, 1)
    np.add.at(diff, last + 1, -1)
    return np.cumsum(diff[:n], dtype=np.int32) > 0


class QCTables:
    """TSS windows (genome-linear coordinates), their 1 kb grid and the promoter-bin mask of a bin index.

    ``grid_offset[c] + (pos >> GRID_SHIFT)`` is the grid cell of position ``pos`` on chromosome ``c`` (int32);
    ``tss_grid`` marks the cells touching a TSS window, so only insertions in marked cells are looked up
    exactly (by binary search in the merged windows, on the genome-linear coordinate).
    """

    def __init__(self, bins: BinIndex):
        genome = bins.genome
        sizes = bins.chrom_sizes.astype(np.int64)
        self.chrom_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        n_cells = (sizes >> GRID_SHIFT) + 1
        self.grid_offset = np.concatenate([[0], np.cumsum(n_cells)[:-1]]).astype(np.int32)
        self.promoter_bins = np.zeros(bins.n_bins, dtype=bool)
        empty = np.zeros(0, dtype=np.int64)
        self.center, self.flank = (empty, empty), (empty, empty)
        self.tss_grid = np.zeros(int(n_cells.sum()), dtype=bool)
        self.has_genes = genome.genes_path is not None
        if self.has_genes:
            self._add_genes(bins)

    def _add_genes(self, bins: BinIndex) -> None:
        genome = bins.genome
        genes = genome.genes()
        index = {c: i for i, c in enumerate(genome.chroms)}
        ci = np.array([index[c] for c in genes["chrom"]], dtype=np.int64)  # genes() keeps modelled chroms
        tss = genes["tss"].to_numpy(np.int64)
        minus = genes["strand"].to_numpy() == "-"
        lin = self.chrom_start[ci] + tss
        self.center = _merge(lin - TSS_CENTER, lin + TSS_CENTER + 1)
        lo, hi = TSS_FLANK
        self.flank = _merge(np.concatenate([lin - hi, lin + lo]), np.concatenate([lin - lo + 1, lin + hi + 1]))
        # grid cells touched by any window, per chromosome (windows clipped to their chromosome)
        w_ci = np.concatenate([ci, ci, ci])
        w_start = np.concatenate([tss - TSS_CENTER, tss - hi, tss + lo])
        w_end = np.concatenate([tss + TSS_CENTER + 1, tss - lo + 1, tss + hi + 1])
        size = bins.chrom_sizes[w_ci]
        w_start, w_end = np.clip(w_start, 0, size - 1), np.clip(w_end, 1, size)
        off = self.grid_offset[w_ci]
        first, last = off + (w_start >> GRID_SHIFT), off + ((w_end - 1) >> GRID_SHIFT)
        self.tss_grid = _cover(first, last, self.tss_grid.size)
        up, down = PROMOTER
        p_start = np.where(minus, tss - down + 1, tss - up)
        p_end = np.where(minus, tss + up + 1, tss + down)
        size = bins.chrom_sizes[ci]
        first = bins.bin_ids(ci, np.clip(p_start, 0, size - 1))
        last = bins.bin_ids(ci, np.clip(p_end - 1, 0, size - 1))
        self.promoter_bins = _cover(first, last, bins.n_bins)


class CellStats:
    """Growing per-cell counters (one int64 array per field of :data:`STAT_FIELDS`)."""

    def __init__(self):
        self.n = 0
        self.arrays = {f: np.zeros(1024, dtype=np.int64) for f in STAT_FIELDS}

    def grow(self, n_cells: int) -> None:
        if n_cells > self.arrays["n_unique"].size:
            cap = max(n_cells, 2 * self.arrays["n_unique"].size)
            for f, a in self.arrays.items():
                self.arrays[f] = np.concatenate([a, np.zeros(cap - a.size, dtype=np.int64)])
        self.n = max(self.n, n_cells)

    def add(self, field: str, cells: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add 1 (or ``weights``) per entry of ``cells`` (global cell ids < self.n)."""
        if cells.size == 0:
            return
        counts = np.bincount(cells, weights=weights, minlength=self.n)
        self.arrays[field][: counts.size] += counts.astype(np.int64) if weights is not None else counts

    def add_lengths(self, cells: np.ndarray, length_class: np.ndarray) -> None:
        """n_nfr, n_mono and n_main in one pass. ``length_class``: (n,) 0 = NFR, 1 = mono, 2 = longer."""
        if cells.size == 0:
            return
        counts = np.bincount(cells * 3 + length_class, minlength=3 * self.n).reshape(-1, 3)  # (n_cells, 3)
        k = counts.shape[0]
        self.arrays["n_nfr"][:k] += counts[:, 0]
        self.arrays["n_mono"][:k] += counts[:, 1]
        self.arrays["n_main"][:k] += counts.sum(axis=1)

    def __getitem__(self, field: str) -> np.ndarray:
        return self.arrays[field][: self.n]

    def to_obs(self, index: pd.Index, rows: np.ndarray, *, has_genes: bool) -> pd.DataFrame:
        """QC columns for the cells ``rows`` (global ids), as documented in this module."""
        a = {f: self[f][rows] for f in STAT_FIELDS}

        def ratio(num, den):
            return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)

        obs = pd.DataFrame(index=index)
        obs["n_fragments"] = a["n_fragments"]
        obs["n_unique"] = a["n_unique"]
        obs["n_main"] = a["n_main"]
        obs["duplication_rate"] = 1.0 - ratio(a["n_unique"], a["n_fragments"])
        obs["frac_mito"] = ratio(a["n_mito"], a["n_unique"])
        obs["nucleosome_signal"] = ratio(a["n_mono"], a["n_nfr"])
        if has_genes:
            obs["tss_enrichment"] = (a["tss_center"] / (2 * TSS_CENTER + 1)) / (
                np.maximum(a["tss_flank"], 1) / (2 * (TSS_FLANK[1] - TSS_FLANK[0] + 1)))
            obs["frac_promoter"] = ratio(a["n_promoter"], 2 * a["n_main"])
        return obs
