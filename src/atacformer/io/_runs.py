"""Spilled sorted runs of (cell, bin, count) and their merge into cells × bins CSR row blocks.

Each chunk of fragments becomes one *run*: its unique (cell, bin) pairs with counts, sorted by cell then
bin, appended to three files in a temporary folder (cells present, bins, counts). Memory is thus bounded
by one chunk while reading, and by one block of cells while merging, whatever the input size.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._atomic import spill_dir


@dataclass
class _Run:
    entry_offset: int  # into bins/counts files (entries)
    cell_offset: int  # into the cells file (entries); the ptr file holds n_cells + 1 entries per run
    n_cells: int
    index: int  # position of the run in the store

    @property
    def ptr_offset(self) -> int:  # into the ptr file: runs before this one hold n_cells + 1 entries each
        return self.cell_offset + self.index


class RunStore:
    """Append-only on-disk store of sorted (cell, bin, count) runs."""

    def __init__(self, n_bins: int, tmp_dir: str | Path | None = None):
        self.n_bins = n_bins
        self.dir = spill_dir("ingest", tmp_dir)  # atacformer-ingest-<pid>-*: swept once that process is gone
        self._files = {k: open(self.dir / f"{k}.bin", "wb") for k in ("cells", "ptr", "bins", "counts")}
        self.runs: list[_Run] = []
        self.n_entries = 0
        self._n_cell_entries = 0

    def add(self, cell: np.ndarray, b1: np.ndarray, b2: np.ndarray, n_cells: int, *, same_bin_count: int = 2
            ) -> None:
        """Count the insertions of one chunk of fragments and spill them as a run.

        cell, b1, b2: (n,) int arrays — each fragment's cell and the bins of its two insertions. A fragment
        whose insertions share a bin (most of them) is one entry worth ``same_bin_count`` (2 when counting
        insertions, 1 when counting fragments); the others are two entries worth 1, so the sort below works
        on about n entries instead of 2n.
        """
        if cell.size == 0:
            return
        split = b1 != b2
        cells = np.concatenate([cell, cell[split]])
        bins = np.concatenate([b1, b2[split]])
        weight = np.ones(cells.size, dtype=np.int32)
        weight[: cell.size] += (same_bin_count - 1) * ~split
        lo, hi = int(b1.min()), int(b2.max()) + 1
        # cells × bins CSR: linear-time counting sort by cell, then short per-row sorts and duplicate sums
        by_cell = sp.csr_matrix((weight, (cells, bins - lo)), shape=(n_cells, hi - lo))
        by_cell.sum_duplicates()
        indptr = by_cell.indptr
        present = np.flatnonzero(indptr[1:] != indptr[:-1]).astype(np.int32)
        ptr = indptr[np.append(present, n_cells)].astype(np.int64) - indptr[present[0]]
        self.runs.append(_Run(self.n_entries, self._n_cell_entries, present.size, index=len(self.runs)))
        self._write("cells", present)
        self._write("ptr", ptr)
        self._write("bins", (by_cell.indices + np.int32(lo)).astype(np.int32, copy=False))
        self._write("counts", by_cell.data.astype(np.int32, copy=False))
        self.n_entries += by_cell.nnz
        self._n_cell_entries += present.size

    def _write(self, name: str, array: np.ndarray) -> None:
        try:
            self._files[name].write(array.tobytes())
        except OSError as err:
            raise self._spill_error(err) from None

    def _spill_error(self, err: OSError) -> OSError:
        return OSError(err.errno, f"cannot write the temporary spill folder {self.dir} ({err.strerror or err}); "
                       "set TMPDIR to a disk with more room")

    def _read(self, name: str, dtype, offset: int, count: int) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.fromfile(self.dir / f"{name}.bin", dtype=dtype, count=count, offset=offset * itemsize)

    def _gather(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All entries of cells [c0, c1) over all runs: (cell, bin, count)."""
        cells, bins, counts = [], [], []
        for run in self.runs:
            present = self._read("cells", np.int32, run.cell_offset, run.n_cells)
            i0, i1 = np.searchsorted(present, [c0, c1])
            if i0 == i1:
                continue
            ptr = self._read_ptr(run, i0, i1)
            start, stop = int(ptr[0]), int(ptr[-1])
            cells.append(np.repeat(present[i0:i1], np.diff(ptr)))
            bins.append(self._read("bins", np.int32, run.entry_offset + start, stop - start))
            counts.append(self._read("counts", np.int32, run.entry_offset + start, stop - start))
        if not cells:
            z = np.zeros(0, dtype=np.int32)
            return z, z, z
        return np.concatenate(cells), np.concatenate(bins), np.concatenate(counts)

    def _read_ptr(self, run: _Run, i0: int, i1: int) -> np.ndarray:
        return self._read("ptr", np.int64, run.ptr_offset + i0, i1 - i0 + 1)

    def blocks(self, keep: np.ndarray, budget: np.ndarray, *, max_entries: int = 4_000_000
               ) -> Iterator[sp.csr_matrix]:
        """Cells × bins CSR blocks (int32 counts) of the kept cells, in cell-id order.

        ``keep``: (n_cells,) bool; ``budget``: (n_cells,) upper bound of entries per cell, used to size blocks.
        """
        for f in self._files.values():
            try:
                f.flush()
            except OSError as err:
                raise self._spill_error(err) from None
        n_cells = keep.size
        bounds = np.cumsum(budget)
        c0 = 0
        while c0 < n_cells:
            base = bounds[c0 - 1] if c0 else 0
            c1 = max(int(np.searchsorted(bounds, base + max_entries, side="right")), c0 + 1)
            c1 = min(c1, n_cells)
            rows = np.flatnonzero(keep[c0:c1])
            if rows.size:
                cell, bins, counts = self._gather(c0, c1)
                block = sp.csr_matrix((counts, (cell - c0, bins)), shape=(c1 - c0, self.n_bins))
                block = block[rows] if rows.size < c1 - c0 else block
                block.sort_indices()
                yield block
            c0 = c1

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:  # a failed flush (disk full): the folder goes anyway
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
