"""Corpus inputs: cells × bins AnnData objects, h5ad files (streamed in row blocks) and fragment files.

Every input becomes a :class:`CellSource`: a name, the :class:`~atacformer.genome.BinIndex` it was
binned with, a cell count, and :meth:`CellSource.blocks`, which yields :class:`CellBlock` s of at most
``block_size`` cells whose matrix columns are *global* bin ids (sorted, zeros dropped). h5ad files are
opened with ``backed="r"`` so only one block of the count matrix is in memory at a time; their
``obs`` table (one row per cell, no counts) is read whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..genome import BinIndex, get_genome

FRAGMENT_SUFFIXES = (".tsv.gz", ".tsv.bgz", ".tsv", ".fragments.gz", ".bed.gz", ".bed")


@dataclass
class CellBlock:
    """A block of cells: ``X`` (n × B CSR, columns = global bin ids, sorted, no explicit zeros),
    their ids and their ``obs`` rows."""

    X: sp.csr_matrix
    cell_ids: np.ndarray
    obs: pd.DataFrame


def global_columns(var: pd.DataFrame, bins: BinIndex, where: str) -> np.ndarray:
    """Global bin id of each ``var`` row, from var chrom/start (fast) or from the bin names."""
    if {"chrom", "start"} <= set(var.columns):
        chrom = pd.Series(var["chrom"].astype(str).to_numpy())
        ci = chrom.map({c: i for i, c in enumerate(bins.chroms)}).to_numpy(dtype=float)
        start = var["start"].to_numpy(dtype=np.int64)
        ok = ~np.isnan(ci) & (start % bins.bin_size == 0)
        cols = np.full(len(var), -1, dtype=np.int64)
        cols[ok] = bins.offsets[ci[ok].astype(np.int64)] + start[ok] // bins.bin_size
        ok[ok] &= cols[ok] < bins.offsets[ci[ok].astype(np.int64) + 1]
        cols[~ok] = -1
    else:
        cols = bins.ids_from_names(var.index)
    bad = np.flatnonzero(cols < 0)
    if len(bad):
        raise ValueError(
            f"{where}: {len(bad)} of {len(var)} columns are not {bins.bin_size} bp bins of genome "
            f"{bins.genome.name!r} (first: {var.index[bad[0]]!r}); re-bin it with atacformer ingest first"
        )
    if len(np.unique(cols)) != len(cols):
        raise ValueError(f"{where}: duplicate bins among its columns")
    return cols


def to_global(X, cols: np.ndarray, n_bins: int) -> sp.csr_matrix:
    """Re-index a block's columns to global bin ids; sorted indices, explicit zeros dropped."""
    X = sp.csr_matrix(X)
    identity = len(cols) == n_bins and cols[0] == 0 and np.all(np.diff(cols) == 1)
    if not identity:
        X = sp.csr_matrix((X.data, cols[X.indices], X.indptr), shape=(X.shape[0], n_bins))
    X.eliminate_zeros()
    if not X.has_sorted_indices:
        X.sort_indices()
    return X


class CellSource:
    """One corpus input: an in-memory AnnData, an h5ad file read in blocks, or fragment files."""

    def __init__(self, name: str, bins: BinIndex, n_cells: int, obs_keys: Sequence[str], *,
                 adata: ad.AnnData | None = None, path: Path | None = None, where: str = ""):
        self.name, self.bins, self.n_cells, self.obs_keys = name, bins, n_cells, list(obs_keys)
        self._adata, self._path, self.where = adata, path, where or name

    def __repr__(self) -> str:
        return f"CellSource({self.name!r}, n_cells={self.n_cells}, {self.bins!r})"

    def blocks(self, block_size: int) -> Iterator[CellBlock]:
        adata = self._adata
        backed = adata is None
        if backed:
            adata = ad.read_h5ad(self._path, backed="r")
        try:
            cols = global_columns(adata.var, self.bins, self.where)
            for start in range(0, adata.n_obs, block_size):
                stop = min(start + block_size, adata.n_obs)
                X = to_global(adata.X[start:stop], cols, self.bins.n_bins)
                yield CellBlock(X, adata.obs_names[start:stop].to_numpy(dtype=str), adata.obs.iloc[start:stop])
        finally:
            if backed:
                adata.file.close()


def bins_of(uns: Mapping, where: str) -> BinIndex:
    if "genome" not in uns or "bin_size" not in uns:
        raise ValueError(f"{where}: no uns['genome'] / uns['bin_size']: make it with `atacformer ingest` first")
    return BinIndex.from_uns(uns)


def _is_fragments(path: Path) -> bool:
    return path.name.lower().endswith(FRAGMENT_SUFFIXES)


def _read_fragments(path: Path, genome, bin_size: int) -> ad.AnnData:
    try:
        from ..io import read_fragments
    except ImportError:
        raise ValueError(
            f"{path}: fragment files need atacformer.io.read_fragments, which this install lacks; "
            "run `atacformer ingest` on it and tokenize the h5ad"
        ) from None
    return read_fragments([path], genome=genome, bin_size=bin_size)


def _named_inputs(inputs) -> list[tuple[str, object]]:
    """``[(name, input)]`` from one input, a list, or a ``{name: input}`` mapping. File inputs are
    named by their file name (without ``.h5ad``/``.tsv.gz``); AnnData objects ``adata0``, ``adata1``…"""
    if isinstance(inputs, Mapping):
        return [(str(k), v) for k, v in inputs.items()]
    if isinstance(inputs, (str, Path, ad.AnnData)) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    named, seen = [], set()
    for i, x in enumerate(inputs):
        if isinstance(x, ad.AnnData):
            base = f"adata{i}"
        else:
            base = Path(x).name
            for suffix in (".h5ad", *FRAGMENT_SUFFIXES):
                if base.lower().endswith(suffix):
                    base = base[: -len(suffix)]
                    break
        name, k = base, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        named.append((name, x))
    return named


def open_sources(inputs, *, genome=None, bin_size: int | None = None) -> list[CellSource]:
    """Open every input (cheaply: h5ad files are only opened backed to read ``uns``/shape) and check
    they all share one genome and bin size (and ``genome``/``bin_size`` when given).

    Fragment files are binned here with :func:`atacformer.io.read_fragments` (in memory, CSR), on
    ``genome``/``bin_size`` or else on the genome and bin size of the other inputs."""
    named = _named_inputs(inputs)
    if not named:
        raise ValueError("no inputs given")
    pending = []  # (name, adata, bins, path, n_cells, obs keys); bins None = fragments, binned below
    for name, x in named:
        if isinstance(x, ad.AnnData):
            pending.append((name, x, bins_of(x.uns, f"AnnData {name!r}"), None, x.n_obs, list(x.obs)))
            continue
        path = Path(x)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if _is_fragments(path):
            pending.append((name, None, None, path, 0, []))
            continue
        if path.suffix != ".h5ad":
            raise ValueError(f"{path}: cannot tell the input type (expected .h5ad or a fragments .tsv[.gz])")
        backed = ad.read_h5ad(path, backed="r")
        try:
            pending.append((name, None, bins_of(backed.uns, str(path)), path, backed.n_obs, list(backed.obs)))
        finally:
            backed.file.close()
    known = [p[2] for p in pending if p[2] is not None]
    ref_genome = get_genome(genome) if genome is not None else (known[0].genome if known else None)
    ref_bin_size = int(bin_size) if bin_size is not None else (known[0].bin_size if known else 5000)
    sources = []
    for name, adata, bins, path, n, keys in pending:
        where = str(path) if path is not None else f"AnnData {name!r}"
        if bins is None:
            if ref_genome is None:
                raise ValueError(f"{path}: fragment input needs genome=... (e.g. --genome hg38)")
            adata = _read_fragments(path, ref_genome, ref_bin_size)
            bins, n, keys = bins_of(adata.uns, where), adata.n_obs, list(adata.obs)
        _check_same(bins, ref_genome.bins(ref_bin_size), where)
        sources.append(CellSource(name, bins, n, keys, adata=adata, path=path, where=where))
    return sources


def _check_same(bins: BinIndex, ref: BinIndex, where: str) -> None:
    if (bins.genome.name != ref.genome.name or bins.bin_size != ref.bin_size
            or bins.genome.chrom_sizes != ref.genome.chrom_sizes):
        raise ValueError(
            f"{where} is on genome {bins.genome.name!r} with {bins.bin_size} bp bins, but the corpus is "
            f"{ref.genome.name!r} with {ref.bin_size} bp bins: all inputs must share genome and bin size"
        )
