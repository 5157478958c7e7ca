"""Reading bin sequences from an uncompressed FASTA (+ ``.fai``, made by pyfaidx when missing)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..genome import BinIndex

log = logging.getLogger(__name__)


class GenomeFasta:
    """A FASTA checked against a :class:`BinIndex`: every modelled chromosome must be present (names
    normalised, ``1`` = ``chr1``) with exactly the genome's length, so a wrong assembly fails early."""

    def __init__(self, path: str | Path, bins: BinIndex):
        import pyfaidx

        self.path = Path(path)
        self.bins = bins
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: FASTA file not found")
        if self.path.suffix in (".gz", ".bgz", ".bz2", ".xz"):
            raise ValueError(f"{self.path}: compressed FASTA is not supported; decompress it (gunzip) first")
        if not Path(str(self.path) + ".fai").exists():
            log.info("indexing %s (writing %s.fai)", self.path, self.path)
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True)  # (re)builds a missing or stale .fai
        except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat) as err:
            raise ValueError(f"{self.path}: cannot index FASTA: {err}") from None
        by_norm = {bins.genome.chroms[i]: k for k in self._fasta.keys()
                   if (i := bins.genome.chrom_index(k)) is not None}
        self._keys = []
        for chrom, size in bins.genome.chrom_sizes.items():
            if chrom not in by_norm:
                raise ValueError(f"{self.path}: chromosome {chrom} of genome {bins.genome.name!r} is not in the "
                                 f"FASTA (it has {', '.join(list(self._fasta.keys())[:5])}, ...)")
            length = len(self._fasta[by_norm[chrom]])
            if length != size:
                raise ValueError(f"{self.path}: {chrom} is {length} bp in the FASTA but {size} bp in genome "
                                 f"{bins.genome.name!r}: is the FASTA from another assembly?")
            self._keys.append(by_norm[chrom])

    def region(self, chrom_idx: int, start: int, end: int) -> str:
        """Sequence of ``[start, end)`` on chromosome ``chrom_idx`` (index into the genome's chroms)."""
        return self._fasta[self._keys[chrom_idx]][start:end]

    def bins_region(self, first: int, last: int) -> list[tuple[int, int, str]]:
        """Sequences of global bins ``[first, last)`` as ``(first_bin, n_bins, sequence)`` pieces, one
        contiguous piece per chromosome touched."""
        pieces = []
        b = first
        while b < last:
            c = int(self.bins.chrom_of([b])[0])
            end_b = min(last, int(self.bins.offsets[c + 1]))
            _, start, _ = self.bins.coords([b])
            _, _, stop = self.bins.coords([end_b - 1])
            pieces.append((b, end_b - b, self.region(c, int(start[0]), int(stop[0]))))
            b = end_b
        return pieces

    def bin_sequences(self, bin_ids) -> list[str]:
        """Sequence of each global bin id."""
        c, start, end = self.bins.coords(bin_ids)
        return [self.region(int(ci), int(s), int(e)) for ci, s, e in zip(c, start, end, strict=False)]

    def close(self) -> None:
        self._fasta.close()
