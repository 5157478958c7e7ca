"""A per-bin DNA embedding table, aligned to a :class:`~atacformer.tokenize.BinVocab` by bin name."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .formats import read_table, write_table

log = logging.getLogger(__name__)

REQUIRED_META = ("genome", "bin_size", "source_model", "layer", "pooling", "dim", "dtype")
_ALIGN_CHUNK = 65536  # rows converted to float32 at a time


class DNAEmbeddingTable:
    """Rows ``(n, dim)`` (float16 or float32, possibly memory-mapped), one per bin name, plus metadata
    (genome, bin size, source model, layer, pooling, dim, dtype).

    >>> table = DNAEmbeddingTable.load("hg38_kmer256/")
    >>> E = table.aligned(vocab)          # (len(vocab), dim) float32, rows = token ids
    >>> table.n_missing                   # vocabulary bins the table lacks (zero rows)
    """

    def __init__(self, embeddings: np.ndarray, bin_names, metadata: dict, *, path: str | Path | None = None):
        where = f"{path}: " if path else ""
        if embeddings.ndim != 2:
            raise ValueError(f"{where}embeddings must be 2-D (bins, dim), got shape {embeddings.shape}")
        if len(bin_names) != embeddings.shape[0]:
            raise ValueError(f"{where}{len(bin_names)} bin names for {embeddings.shape[0]} embedding rows")
        meta = dict(metadata)
        meta.setdefault("dim", int(embeddings.shape[1]))
        meta.setdefault("dtype", str(embeddings.dtype))
        for key, default in (("source_model", "unknown"), ("layer", "unknown"), ("pooling", "unknown")):
            meta.setdefault(key, default)
        missing = [k for k in ("genome", "bin_size") if k not in meta]
        if missing:
            raise ValueError(f"{where}table metadata lacks {missing} (needed to check it against a vocabulary)")
        if int(meta["dim"]) != embeddings.shape[1]:
            raise ValueError(f"{where}metadata says dim={meta['dim']} but rows have {embeddings.shape[1]} columns")
        meta["dim"], meta["bin_size"], meta["genome"] = int(meta["dim"]), int(meta["bin_size"]), str(meta["genome"])
        self.embeddings = embeddings
        self.bin_names = np.asarray(bin_names, dtype=object)
        self.metadata = meta
        self.path = Path(path) if path else None
        self.n_missing: int | None = None  # set by aligned()
        self.n_unused: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.metadata["dim"]

    @property
    def genome(self) -> str:
        return self.metadata["genome"]

    @property
    def bin_size(self) -> int:
        return self.metadata["bin_size"]

    @property
    def dtype(self) -> np.dtype:
        return self.embeddings.dtype

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __repr__(self) -> str:
        return (f"DNAEmbeddingTable(genome={self.genome!r}, bin_size={self.bin_size}, n_bins={len(self)}, "
                f"dim={self.dim}, dtype={self.dtype}, source_model={self.metadata['source_model']!r})")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: str | Path, *, genome: str | None = None, bin_size: int | None = None) -> DNAEmbeddingTable:
        """Load a table (directory, ``.npy`` + sidecars, ``.npz``, ``.h5`` or ``.parquet``); ``.npy``
        rows are memory-mapped. ``genome``/``bin_size``, if given, must match the table's."""
        rows, names, meta = read_table(path)
        table = cls(rows, names, meta, path=path)
        if genome is not None or bin_size is not None:
            table.check_compatible(genome or table.genome, bin_size or table.bin_size)
        log.info("loaded %r from %s", table, path)
        return table

    def save(self, path: str | Path, *, dtype: str | np.dtype | None = None) -> Path:
        """Write the table to ``path`` (format from its suffix; no suffix = table directory), optionally
        cast to ``dtype`` (``float16`` halves the size)."""
        rows = np.asarray(self.embeddings, dtype=dtype) if dtype is not None else np.asarray(self.embeddings)
        meta = {**self.metadata, "dtype": str(rows.dtype), "n_bins": len(self)}
        return write_table(path, rows, self.bin_names, meta)

    # ------------------------------------------------------------------ alignment
    def check_compatible(self, genome: str, bin_size: int, chrom_sizes: dict | None = None) -> None:
        """Raise a ``ValueError`` if the table is for another genome, bin size or chromosome lengths."""
        where = f"{self.path}: " if self.path else ""
        if str(genome) != self.genome or int(bin_size) != self.bin_size:
            raise ValueError(f"{where}DNA table is for genome {self.genome!r} with {self.bin_size} bp bins, "
                             f"not genome {genome!r} with {bin_size} bp bins")
        saved = self.metadata.get("chrom_sizes")
        if chrom_sizes and saved:
            diff = [c for c in chrom_sizes if c in saved and int(saved[c]) != int(chrom_sizes[c])]
            if diff:
                raise ValueError(f"{where}DNA table genome {self.genome!r} has other lengths for {diff[:3]}: "
                                 "built from another assembly")

    def _bin_ids(self, bins) -> np.ndarray:
        """Global bin id of each row's name (-1: not a bin of ``bins``): exact names by dictionary,
        the rest (e.g. Ensembl-style ``1:0-5000``) parsed and normalised."""
        lookup = dict(zip(bins.names().tolist(), range(bins.n_bins), strict=False))
        ids = np.fromiter((lookup.get(str(n), -1) for n in self.bin_names), dtype=np.int64, count=len(self))
        other = ids < 0
        if other.any():
            ids[other] = bins.ids_from_names(self.bin_names[other])
        return ids

    def aligned(self, vocab) -> np.ndarray:
        """Rows aligned to the token ids of ``vocab`` (a BinVocab): float32 ``(len(vocab), dim)``.

        Rows are matched by bin NAME (never row order); special tokens and vocabulary bins missing from
        the table get zeros. Sets :attr:`n_missing` (vocabulary bins without a row) and :attr:`n_unused`
        (table rows that are not vocabulary bins, e.g. chrY)."""
        self.check_compatible(vocab.genome.name, vocab.bin_size, vocab.genome.chrom_sizes)
        ids = self._bin_ids(vocab.bins)  # (n_rows,) global bin id or -1
        found = ids[ids >= 0]
        uniq, counts = np.unique(found, return_counts=True)
        if (counts > 1).any():
            dup = vocab.bins.names(uniq[counts > 1][:3]).tolist()
            raise ValueError(f"{self.path or 'table'}: duplicate bin names in the DNA table, e.g. {dup}")
        out = np.zeros((len(vocab), self.dim), dtype=np.float32)  # (V, dim)
        for s in range(0, len(self), _ALIGN_CHUNK):
            chunk_ids = ids[s : s + _ALIGN_CHUNK]
            rows = self.embeddings[s : s + _ALIGN_CHUNK]  # (chunk, dim) stored dtype
            first = vocab.bin_to_token(chunk_ids[0])
            if chunk_ids[0] >= 0 and np.array_equal(chunk_ids, np.arange(chunk_ids[0], chunk_ids[0] + len(chunk_ids))):
                out[first : first + len(rows)] = rows  # in-order rows (tables written by build_table)
            else:
                keep = chunk_ids >= 0
                out[vocab.bin_to_token(chunk_ids[keep])] = np.asarray(rows, dtype=np.float32)[keep]
        self.n_missing = int(vocab.n_bins - len(found))
        self.n_unused = int(len(self) - len(found))
        level = logging.WARNING if self.n_missing else logging.INFO
        log.log(level, "DNA table %s: %d of %d vocabulary bins found, %d missing (zero rows), %d table rows unused",
                self.path or "", len(found), vocab.n_bins, self.n_missing, self.n_unused)
        return out
