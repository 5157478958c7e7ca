"""Corpus inputs: cells × bins AnnData objects, h5ad files (streamed in row blocks) and fragment files.

Every input becomes a :class:`CellSource`: a name, the :class:`~atacformer.genome.BinIndex` it was
binned with, a cell count, and :meth:`CellSource.blocks`, which yields :class:`CellBlock` s of at most
``block_size`` cells whose matrix columns are *global* bin ids (sorted, zeros dropped). h5ad files are
read with h5py one block of rows of the count matrix at a time (never the whole matrix); their ``obs``
table (one row per cell, no counts) is read whole, and of ``var`` only the chrom/start columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, sparse_dataset

from ..genome import BinIndex, get_genome

FRAGMENT_SUFFIXES = (".tsv.gz", ".tsv.bgz", ".tsv", ".fragments.gz", ".bed.gz", ".bed")


@dataclass
class CellBlock:
    """A block of cells: ``X`` (n × B CSR, columns = global bin ids, sorted, no explicit zeros),
    their ids and their ``obs`` rows."""

    X: sp.csr_matrix
    cell_ids: np.ndarray
    obs: pd.DataFrame


def global_columns(var: pd.DataFrame, bins: BinIndex, where: str) -> np.ndarray | None:
    """Global bin id of each ``var`` row, from var chrom/start (fast) or else from the bin names;
    ``None`` when the columns are exactly all bins in order (nothing to re-index)."""
    if {"chrom", "start"} <= set(var.columns):
        chrom = pd.Categorical(var["chrom"])  # free when already categorical, as ingest writes it
        lookup = np.array([_index_or(bins, c) for c in chrom.categories] + [-1], dtype=np.int64)
        ci = lookup[chrom.codes]  # code -1 (missing) → -1
        start = np.asarray(var["start"], dtype=np.int64)
        ok = (ci >= 0) & (start % bins.bin_size == 0) & (start >= 0)
        cols = np.where(ok, bins.offsets[ci] + start // bins.bin_size, -1)
        ok &= cols < bins.offsets[ci + 1]
        cols[~ok] = -1
        labels = [f"{c}:{s}" for c, s in zip(np.asarray(chrom), start, strict=False)] if not ok.all() else []
    else:
        cols = bins.ids_from_names(var.index)
        labels = list(var.index)
    bad = np.flatnonzero(cols < 0)
    if len(bad):
        raise ValueError(
            f"{where}: {len(bad)} of {len(var)} columns are not {bins.bin_size} bp bins of genome "
            f"{bins.genome.name!r} (first: {labels[bad[0]]!r}); re-bin it with atacformer ingest first"
        )
    if len(cols) == bins.n_bins and np.array_equal(cols, np.arange(bins.n_bins)):
        return None
    if np.any(np.diff(np.sort(cols)) == 0):
        raise ValueError(f"{where}: duplicate bins among its columns")
    return cols


def _index_or(bins: BinIndex, chrom) -> int:
    i = bins.genome.chrom_index(str(chrom))
    return -1 if i is None else i


def to_global(X, cols: np.ndarray | None, n_bins: int) -> sp.csr_matrix:
    """Re-index a block's columns to global bin ids (``cols=None``: already are); sorted indices,
    explicit zeros dropped."""
    X = sp.csr_matrix(X)
    if cols is not None:
        X = sp.csr_matrix((X.data, cols[X.indices], X.indptr), shape=(X.shape[0], n_bins))
    X.eliminate_zeros()
    if not X.has_sorted_indices:
        X.sort_indices()
    return X


def _read_var(group: h5py.Group) -> pd.DataFrame:
    """An h5ad ``var`` as chrom/start columns only (cheap), or as its index of bin names."""
    if "chrom" in group and "start" in group:
        return pd.DataFrame({"chrom": read_elem(group["chrom"]), "start": read_elem(group["start"])})
    return pd.DataFrame(index=pd.Index(read_elem(group[group.attrs["_index"]]), dtype=str))


def _h5ad_meta(path: Path) -> tuple[dict, int, list[str]]:
    """(uns genome fields, n_obs, obs columns) of an h5ad, without reading its matrix or var."""
    try:
        with h5py.File(path, "r") as f:
            uns = f["uns"] if "uns" in f else {}
            meta = {k: read_elem(uns[k]) for k in ("genome", "bin_size", "chrom_sizes") if k in uns}
            X = f["X"]
            n_obs = int(X.attrs["shape"][0]) if isinstance(X, h5py.Group) else int(X.shape[0])
            keys = [str(k) for k in f["obs"].attrs.get("column-order", [])]
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a readable h5ad file ({err})") from None
    return meta, n_obs, keys


class CellSource:
    """One corpus input: an in-memory AnnData, an h5ad file read in blocks, or a fragment file (binned
    when its blocks are first asked for; ``n_cells`` is then unknown (None) until it has been read)."""

    def __init__(self, name: str, bins: BinIndex, n_cells: int | None, obs_keys: Sequence[str], *,
                 adata: ad.AnnData | None = None, path: Path | None = None, where: str = "",
                 fragments: bool = False):
        self.name, self.bins, self.n_cells, self.obs_keys = name, bins, n_cells, list(obs_keys)
        self._adata, self._path, self.where, self._fragments = adata, path, where or name, fragments

    def __repr__(self) -> str:
        return f"CellSource({self.name!r}, n_cells={self.n_cells}, {self.bins!r})"

    def blocks(self, block_size: int) -> Iterator[CellBlock]:
        """Blocks of ``block_size`` cells; an h5ad file is read one block of its matrix at a time."""
        if self._fragments:
            adata = _read_fragments(self._path, self.bins.genome, self.bins.bin_size)
            self.n_cells = adata.n_obs
            yield from self._blocks(adata.X, adata.var, adata.obs, block_size)
            return
        if self._adata is not None:
            yield from self._blocks(self._adata.X, self._adata.var, self._adata.obs, block_size)
            return
        try:
            with h5py.File(self._path, "r") as f:
                X = sparse_dataset(f["X"]) if isinstance(f["X"], h5py.Group) else f["X"]
                yield from self._blocks(X, _read_var(f["var"]), read_elem(f["obs"]), block_size)
        except (OSError, KeyError) as err:  # truncated or corrupt file, found while reading it
            raise ValueError(f"{self._path}: cannot read this h5ad file (truncated or corrupt: {err})") from None

    def _blocks(self, X, var: pd.DataFrame, obs: pd.DataFrame, block_size: int) -> Iterator[CellBlock]:
        cols = global_columns(var, self.bins, self.where)
        ids = obs.index.to_numpy(dtype=str)
        for start in range(0, X.shape[0], block_size):
            stop = min(start + block_size, X.shape[0])
            yield CellBlock(to_global(X[start:stop], cols, self.bins.n_bins), ids[start:stop], obs.iloc[start:stop])


def bins_of(uns: Mapping, where: str) -> BinIndex:
    if "genome" not in uns or "bin_size" not in uns:
        raise ValueError(f"{where}: no uns['genome'] / uns['bin_size']: make it with `atacformer ingest` first")
    return BinIndex.from_uns(uns)


def _is_fragments(path: Path) -> bool:
    """Fragments by content (HDF5 files are h5ad inputs); by name only if the io reader is missing."""
    try:
        from ..io.detect import detect_kind
    except ImportError:
        return path.name.lower().endswith(FRAGMENT_SUFFIXES)
    try:
        return detect_kind(path) == "fragments"
    except ValueError:  # empty or unreadable: the name decides, the reader reports the problem
        return path.name.lower().endswith(FRAGMENT_SUFFIXES)


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def _has_fragment_reader() -> bool:
    try:
        from ..io import read_fragments  # noqa: F401
    except ImportError:
        return False
    return True


def _read_fragments(path: Path, genome, bin_size: int) -> ad.AnnData:
    from ..io import read_fragments

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
    """Open every input cheaply (of an h5ad file only ``uns``, the shape and the obs column names are
    read) and check they all share one genome and bin size (and ``genome``/``bin_size`` when given).

    Fragment files are binned later, one at a time, with :func:`atacformer.io.read_fragments` (in
    memory, CSR), on ``genome``/``bin_size`` or else on the other inputs' genome and bin size; their
    ``obs`` holds QC columns only, so they add no labels besides ``dataset`` (join labels with
    ``atacformer ingest --labels`` and tokenize the h5ad instead)."""
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
        if not _is_hdf5(path):
            raise ValueError(f"{path}: cannot tell the input type (expected an h5ad or a fragments .tsv[.gz])")
        uns, n_obs, keys = _h5ad_meta(path)
        pending.append((name, None, bins_of(uns, str(path)), path, n_obs, keys))
    known = [p[2] for p in pending if p[2] is not None]
    ref_genome = get_genome(genome) if genome is not None else (known[0].genome if known else None)
    ref_bin_size = int(bin_size) if bin_size is not None else (known[0].bin_size if known else 5000)
    sources = []
    for name, adata, bins, path, n, keys in pending:
        where = str(path) if path is not None else f"AnnData {name!r}"
        fragments = bins is None
        if fragments:
            if ref_genome is None:
                raise ValueError(f"{path}: fragment input needs genome=... (e.g. --genome hg38)")
            if not _has_fragment_reader():
                raise ValueError(f"{path}: fragment files need atacformer.io.read_fragments, which this "
                                 "install lacks; run `atacformer ingest` on it and tokenize the h5ad")
            bins, n = ref_genome.bins(ref_bin_size), None
        _check_same(bins, ref_genome.bins(ref_bin_size), where)
        sources.append(CellSource(name, bins, n, keys, adata=adata, path=path, where=where, fragments=fragments))
    return sources


def _check_same(bins: BinIndex, ref: BinIndex, where: str) -> None:
    if (bins.genome.name != ref.genome.name or bins.bin_size != ref.bin_size
            or list(bins.genome.chrom_sizes.items()) != list(ref.genome.chrom_sizes.items())):
        raise ValueError(
            f"{where} is on genome {bins.genome.name!r} with {bins.bin_size} bp bins, but the corpus is "
            f"{ref.genome.name!r} with {ref.bin_size} bp bins: all inputs must share genome and bin size"
        )
