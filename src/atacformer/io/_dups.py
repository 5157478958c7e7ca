"""Exact duplicate lines of fragment files (a file concatenated with itself, lanes merged twice), found in
bounded memory whether the file is sorted or not.

These are not PCR duplicates (those are one line with a count > 1): a line seen twice is counted twice,
so counts, ``n_unique`` and TSS enrichment come out wrong. Each fragment (cell, contig, start, end) is
hashed to 64 bits; hashes are kept while they fit in :data:`MAX_HASHES`, and beyond that only those whose
top ``level`` bits are zero (a sample of 1 in 2**level, chosen by the hash, so all copies of a line are in
or out together). The number of duplicate lines is thus exact for files of up to ~4M fragments and an
unbiased estimate above.
"""

from __future__ import annotations

import numpy as np

MAX_HASHES = 4_000_000  # 32 MB of uint64
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out; overflow wraps)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def fragment_hash(cell: np.ndarray, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of (cell id, global contig id, start, end)."""
    with np.errstate(over="ignore"):
        h = _mix(cell.astype(np.uint64) << np.uint64(20) ^ contig.astype(np.uint64))
        h = _mix(h ^ start.astype(np.uint64))
        return _mix(h ^ (end.astype(np.uint64) << np.uint64(1)))


class DuplicateLines:
    """Counts exact duplicate fragment lines over the chunks given to :meth:`add`."""

    def __init__(self, max_hashes: int = MAX_HASHES):
        self.max_hashes = int(max_hashes)
        self.level = 0  # keep hashes whose top `level` bits are 0
        self.n_lines = 0
        self._parts: list[np.ndarray] = []
        self._n_kept = 0

    def _keep(self, h: np.ndarray) -> np.ndarray:
        return h if self.level == 0 else h[(h >> np.uint64(64 - self.level)) == 0]

    def add(self, cell: np.ndarray, contig: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self.n_lines += int(cell.size)
        h = self._keep(fragment_hash(cell, contig, start, end))
        self._parts.append(h)
        self._n_kept += h.size
        while self._n_kept > self.max_hashes:  # halve the sample until it fits
            self.level += 1
            self._parts = [self._keep(np.concatenate(self._parts))]
            self._n_kept = self._parts[0].size

    @property
    def exact(self) -> bool:
        return self.level == 0

    def count(self) -> int:
        """Duplicate lines (every copy after the first), exact or estimated (see :attr:`exact`)."""
        if not self._parts:
            return 0
        h = np.concatenate(self._parts)
        self._parts = [h]
        n_extra = h.size - np.unique(h).size
        return int(n_extra) << self.level
