"""Region count matrices and BED / narrowPeak files → cells (or samples) × bins AnnData.

A region goes to the bin holding its midpoint ``(start + end) // 2`` (for narrowPeak files with a summit,
the summit ``start + peak``). Regions on contigs outside the genome's modelled chromosomes, or past a
chromosome's end, are dropped and counted in ``uns['ingest']``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ..genome import DEFAULT_BIN_SIZE, BinIndex, Genome, get_genome
from ._build import check_build
from .detect import is_hdf5
from .fragments import open_binary
from .ingest import sample_names_for
from .tables import read_table
from .write import read_h5ad

logger = logging.getLogger(__name__)

_CHROM_COLS = ("chrom", "chr", "seqnames", "chromosome", "Chromosome")
_START_COLS = ("start", "chromStart", "Start")
_END_COLS = ("end", "chromEnd", "End")
_NAME = re.compile(r"^(.+?)[:_-](\d+)[_-](\d+)$")


def parse_regions(var: pd.DataFrame, *, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chrom names, start, end) of regions from var columns (chrom/chr/seqnames, start, end) or from names
    like ``chr1:100-600``, ``chr1_100_600``, ``chr1-100-600``."""
    cols = {c: next((x for x in opts if x in var.columns), None)
            for c, opts in (("chrom", _CHROM_COLS), ("start", _START_COLS), ("end", _END_COLS))}
    if all(cols.values()):
        return (var[cols["chrom"]].astype(str).to_numpy(), _integers(var, cols["start"], what),
                _integers(var, cols["end"], what))
    names = var["gene_ids"] if "gene_ids" in var.columns else var.index.to_series()
    chrom, start, end = [], [], []
    for i, name in enumerate(names.astype(str)):
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"{what}: region {i} is named {name!r}; need var columns chrom/start/end or names "
                             "like chr1:100-600, chr1_100_600 or chr1-100-600")
        chrom.append(m.group(1))
        start.append(int(m.group(2)))
        end.append(int(m.group(3)))
    return np.array(chrom, dtype=object), np.array(start, np.int64), np.array(end, np.int64)


def _integers(var: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """var[column] as int64; a ``ValueError`` naming the first region that is not a whole number."""
    values = pd.to_numeric(var[column], errors="coerce")
    bad = values.isna().to_numpy() | (values.to_numpy(np.float64, na_value=np.nan) % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: var column {column!r} must hold integer coordinates; region {i} "
                         f"({var.index[i]!r}) has {var[column].iloc[i]!r} ({int(bad.sum())} such regions)")
    return values.to_numpy(np.int64)


def region_bins(bins: BinIndex, chrom: np.ndarray, pos: np.ndarray, *, what: str) -> tuple[np.ndarray, dict]:
    """Global bin id of each position (-1 when dropped) and a report of what was dropped."""
    genome = bins.genome
    names, inverse = np.unique(np.asarray(chrom, dtype=str), return_inverse=True)
    idx = np.array([-1 if (c := genome.chrom_index(n)) is None else c for n in names], dtype=np.int64)[inverse]
    known = idx >= 0
    inside = known & (pos >= 0) & (pos < np.where(known, bins.chrom_sizes[np.maximum(idx, 0)], 0))
    if not inside.any():
        raise ValueError(
            f"{what}: no region lies on a chromosome of genome {genome.name!r} ({genome.chroms[0]}…"
            f"{genome.chroms[-1]}); contigs seen: {', '.join(names[:8])}. Is it the right genome (hg19 vs hg38 "
            "vs mm10) and chromosome naming (chr1 vs 1)?")
    out = np.full(pos.shape, -1, dtype=np.int64)
    out[inside] = bins.bin_ids(idx[inside], pos[inside])
    unknown = sorted(set(names[np.unique(inverse[~known])]))
    n_past = int((known & ~inside).sum())
    if n_past:
        logger.warning("%s: %d of %d regions lie past the end of their chromosome in genome %s and were dropped",
                       what, n_past, pos.size, genome.name)
    if (~known).any():
        logger.warning("%s: %d regions on contigs not modelled in genome %s were dropped (e.g. %s)", what,
                       int((~known).sum()), genome.name, ", ".join(unknown[:5]))
    report = {"n_regions": int(pos.size), "n_regions_used": int(inside.sum()),
              "n_regions_unknown_contig": int((~known).sum()),
              "n_regions_beyond_chrom_end": int((known & ~inside).sum()),
              "unknown_contigs": np.array(unknown, dtype=str)}
    return out, report


def _check_counts(X: sp.spmatrix, what: str) -> sp.csr_matrix:
    X = sp.csr_matrix(X)
    data = X.data
    if data.size and data.min() < 0:
        raise ValueError(f"{what}: counts must be non-negative, found {data.min()}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data) & (data == np.round(data))):
        bad = data[~(np.isfinite(data) & (data == np.round(data)))][0]
        raise ValueError(f"{what}: counts must be integers (raw counts, not normalised values), found {bad}")
    return X


def rebin(X: sp.spmatrix, region_bin: np.ndarray, n_bins: int) -> sp.csr_matrix:
    """Sum region columns into bins: (cells × regions) @ (regions × bins) one-hot → cells × bins int32."""
    used = np.flatnonzero(region_bin >= 0)
    onehot = sp.csr_matrix((np.ones(used.size, dtype=np.int64), (used, region_bin[used])),
                           shape=(X.shape[1], n_bins))
    out = (sp.csr_matrix(X).astype(np.int64) @ onehot).tocsr()  # int64: sums of int32 counts cannot overflow
    out.sort_indices()
    if out.nnz and out.data.max() > np.iinfo(np.int32).max:
        logger.warning("counts above 2**31 after re-binning: X is stored as int64")
        return out
    return out.astype(np.int32)


def _read_10x_h5(path: Path) -> ad.AnnData:
    with h5py.File(path, "r") as f:
        group = f["matrix"] if "matrix" in f else f[next(iter(f.keys()))]
        n_features, n_cells = (int(x) for x in group["shape"][:])
        X = sp.csr_matrix((group["data"][:], group["indices"][:], group["indptr"][:]), shape=(n_cells, n_features))
        barcodes = [b.decode() for b in group["barcodes"][:]]
        if "features" in group:
            feats = group["features"]
            names = feats["interval"][:] if "interval" in feats else feats["id"][:]
        else:
            names = group["peaks"][:] if "peaks" in group else group["genes"][:]
    return ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes),
                      var=pd.DataFrame(index=[n.decode() if isinstance(n, bytes) else str(n) for n in names]))


def _read_mtx_dir(path: Path) -> ad.AnnData:
    def find(*stems: str) -> Path:
        for stem in stems:
            for ext in ("", ".gz"):
                if (path / f"{stem}{ext}").exists():
                    return path / f"{stem}{ext}"
        raise FileNotFoundError(f"{path}: MatrixMarket folder needs one of {stems} (optionally .gz)")

    with open_binary(find("matrix.mtx")) as fh:
        X = sp.csr_matrix(scipy.io.mmread(fh).T)  # file is regions × cells
    with open_binary(find("barcodes.tsv")) as fh:
        barcodes = [line.decode().strip().split("\t")[0] for line in fh if line.strip()]
    regions = find("peaks.bed", "features.tsv", "genes.tsv")
    with open_binary(regions) as fh:
        rows = [line.decode().rstrip("\r\n").split("\t") for line in fh if line.strip()]
    if regions.name.startswith("peaks"):
        var = pd.DataFrame({"chrom": [r[0] for r in rows], "start": [int(r[1]) for r in rows],
                            "end": [int(r[2]) for r in rows]})
        var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var["chrom"], var["start"], var["end"], strict=False)]
    else:
        var = pd.DataFrame(index=[r[0] for r in rows])
    if X.shape != (len(barcodes), len(var)):
        raise ValueError(f"{path}: matrix is {X.shape[1]} × {X.shape[0]} but there are {len(var)} regions and "
                         f"{len(barcodes)} barcodes")
    return ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)


def load_region_matrix(path_or_adata) -> tuple[ad.AnnData, str]:
    """An AnnData (cells × regions) from an AnnData, an h5ad, a 10x peak-matrix .h5 or a MatrixMarket folder."""
    if isinstance(path_or_adata, ad.AnnData):
        return path_or_adata, "AnnData"
    path = Path(path_or_adata)
    if not path.exists():
        raise FileNotFoundError(f"region matrix not found: {path}")
    if path.is_dir():
        return _read_mtx_dir(path), str(path)
    if not is_hdf5(path):
        raise ValueError(f"{path}: not a region matrix (expected an h5ad, a 10x .h5 or a MatrixMarket folder)")
    try:
        with h5py.File(path, "r") as f:
            is_10x = "matrix" in f or ("X" not in f and "obs" not in f)
    except OSError as err:
        raise ValueError(f"{path}: cannot read this HDF5 file (truncated or corrupt: {err})") from None
    if is_10x:
        try:
            return _read_10x_h5(path), str(path)
        except (KeyError, OSError, ValueError, IndexError) as err:
            raise ValueError(f"{path}: not a readable 10x peak matrix .h5 ({err})") from None
    return read_h5ad(path), str(path)


def read_region_matrix(path_or_adata, *, genome: str | Genome = "hg38", bin_size: int = DEFAULT_BIN_SIZE,
                       force_genome: bool = False) -> ad.AnnData:
    """Re-bin a cells × regions count matrix to cells × bins: each region's counts go to the bin holding its
    midpoint. Keeps ``obs``; negative or non-integer counts, no cells, and regions that look like another
    genome build (unless ``force_genome``) are errors."""
    src, what = load_region_matrix(path_or_adata)
    if src.n_obs == 0:
        raise ValueError(f"{what}: the matrix has no cells (0 rows): nothing to ingest")
    bins = get_genome(genome).bins(bin_size)
    bins.check_memory()
    chrom, start, end = parse_regions(src.var, what=what)
    mid = (start + end) // 2
    region_bin, report = region_bins(bins, chrom, mid, what=what)
    report |= check_build(bins.genome, chrom.astype(str), mid, n_past_end=report["n_regions_beyond_chrom_end"],
                          n_total=mid.size, what=f"{what}: regions", force=force_genome)
    X = _check_counts(src.X, what)
    uns = bins.uns()
    uns["ingest"] = {"inputs": [what], "kind": "region_matrix", **report}
    return ad.AnnData(X=rebin(X, region_bin, bins.n_bins), obs=src.obs.copy(), var=bins.var(), uns=uns,
                      obsm=dict(src.obsm))


def _read_bed_positions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(chrom, position) per region of a BED/narrowPeak file: the summit if given, else the midpoint."""
    chrom, pos = [], []
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            p = line.split("\t")
            try:
                s, e = int(p[1]), int(p[2])
                summit = int(p[9]) if len(p) >= 10 and p[9] not in ("", ".") else -1
            except (IndexError, ValueError):
                raise ValueError(f"{path}, line {lineno}: not a BED line (chrom, start, end, ...): {line[:200]!r}"
                                 ) from None
            if s < 0 or e <= s:
                raise ValueError(f"{path}, line {lineno}: need 0 <= start < end: {line[:200]!r}")
            chrom.append(p[0])
            pos.append(s + summit if 0 <= summit < e - s else (s + e) // 2)
    return np.array(chrom, dtype=object), np.array(pos, dtype=np.int64)


def _sample_rows(sample_table, names: list[str], paths: list[Path]) -> pd.DataFrame:
    """The sample table's row of each input (keyed by sample name or file name); a ``ValueError`` naming the
    table when an input has no row, or a row names no input (a typo, or a table of another folder)."""
    table = read_table(sample_table, key="sample", what="sample")
    where = sample_table if isinstance(sample_table, (str, os.PathLike)) else "the sample table"
    key = [n if n in table.index else p.name for n, p in zip(names, paths, strict=True)]
    missing = [f"{n} ({p})" for k, n, p in zip(key, names, paths, strict=True) if k not in table.index]
    if missing:
        raise ValueError(f"{where}: no row for {len(missing)} of the {len(paths)} BED files: {', '.join(missing[:5])} "
                         f"(the first column must be the sample name {names[0]!r} or the file name {paths[0].name!r})")
    unknown = sorted(set(table.index) - set(key))
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} rows name no input BED file: {', '.join(unknown[:5])} (inputs: "
                         f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                         "give every file or drop those rows")
    return table.loc[key]


def read_bed(paths: str | os.PathLike | Iterable[str | os.PathLike], *, genome: str | Genome = "hg38",
             bin_size: int = DEFAULT_BIN_SIZE, sample_table: str | os.PathLike | pd.DataFrame | None = None,
             sample_names: Sequence[str] | None = None, force_genome: bool = False) -> ad.AnnData:
    """BED / narrowPeak files (bulk region sets) → samples × bins AnnData, one row per file, counting the
    regions whose midpoint (narrowPeak: summit) falls in each bin. ``sample_table`` (keyed by sample name
    or file name) is joined into ``obs``. Regions that look like another genome build are an error unless
    ``force_genome``."""
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("no BED files given")
    bins = get_genome(genome).bins(bin_size)
    bins.check_memory()
    names = sample_names_for(paths, sample_names)
    rows, reports = [], []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"BED file not found: {path}")
        chrom, pos = _read_bed_positions(path)
        if pos.size == 0:
            raise ValueError(f"{path}: no regions in this BED file")
        region_bin, report = region_bins(bins, chrom, pos, what=str(path))
        check_build(bins.genome, chrom.astype(str), pos, n_past_end=report["n_regions_beyond_chrom_end"],
                    n_total=pos.size, what=f"{path}: regions", force=force_genome)
        ids, counts = np.unique(region_bin[region_bin >= 0], return_counts=True)
        rows.append(sp.csr_matrix((counts.astype(np.int32), (np.zeros(ids.size, int), ids)), shape=(1, bins.n_bins)))
        reports.append(report["n_regions_used"])
    X = sp.vstack(rows, format="csr").astype(np.int32)
    obs = pd.DataFrame({"file": [str(p) for p in paths], "n_regions_used": reports}, index=names)
    if sample_table is not None:
        obs = obs.join(_sample_rows(sample_table, names, paths).set_axis(obs.index))
    uns = bins.uns()
    uns["ingest"] = {"inputs": [str(p) for p in paths], "kind": "bed"}
    return ad.AnnData(X=X, obs=obs, var=bins.var(), uns=uns)
