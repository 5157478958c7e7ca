"""Fragment files → cells × bins AnnData (in memory with :func:`read_fragments`, or streamed to an h5ad with
:func:`ingest_fragments`), with per-cell QC in ``obs`` and ingest statistics in ``uns['ingest']``.

One file per sample; with several files each cell is named ``sample#barcode`` and ``obs['sample']`` says
where it came from, so identical barcodes in different files stay distinct cells.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ..genome import DEFAULT_BIN_SIZE, BinIndex, Genome, get_genome, normalize_chrom
from ._build import check_build
from ._counter import FragmentCounter
from .detect import spooled
from .tables import read_labels, read_whitelist
from .write import write_csr_h5ad

logger = logging.getLogger(__name__)

DEFAULT_MIN_FRAGMENTS = 100
MAX_DUPLICATE_FRACTION = 0.01  # more exact duplicate lines than this is an error (see _check_duplicates)
PathLike = str | os.PathLike


@dataclass(frozen=True)
class FragmentOptions:
    """The options of :func:`read_fragments` / :func:`ingest_fragments` (documented there)."""

    counting: str = "insertion"
    min_fragments: int = DEFAULT_MIN_FRAGMENTS
    max_fragments: int | None = None
    whitelist: PathLike | Iterable[str] | None = None
    labels: PathLike | pd.DataFrame | None = None
    sample_names: Sequence[str] | None = None
    allow_duplicate_lines: bool = False
    force_genome: bool = False


def sample_names_for(paths: Sequence[Path], sample_names: Sequence[str] | None = None) -> list[str]:
    """Sample names: given, or from file names (``pbmc_fragments.tsv.gz`` → ``pbmc``), else parent folders."""
    if sample_names is not None:
        names = [str(s) for s in sample_names]
        if len(names) != len(paths):
            raise ValueError(f"got {len(names)} sample names for {len(paths)} input files")
    else:
        names = [re.sub(r"(\.(tsv|bed|txt|csv|gz|bgz|narrowpeak|broadpeak))+$", "", p.name, flags=re.I)
                 for p in paths]
        names = [re.sub(r"[._-]?(atac_)?fragments$", "", n) or n for n in names]
        if len(set(names)) < len(names):
            names = [p.resolve().parent.name for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate sample names {dup} for inputs {[str(p) for p in paths]}; pass sample_names=")
    return names


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    out = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not out:
        raise ValueError("no input files given")
    for p in out:
        if not p.exists():
            raise FileNotFoundError(f"input file not found: {p}")
    return out


def _count(paths: list[Path], bins: BinIndex, *, counting: str, whitelist, samples: list[str]
           ) -> FragmentCounter:
    counter = FragmentCounter(bins, counting=counting, whitelist=read_whitelist(whitelist))
    prefixes = [f"{s}#" for s in samples] if len(paths) > 1 else [""]
    total = sum(p.stat().st_size for p in paths)
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="reading fragments", disable=None) as bar:
            for path, prefix in zip(paths, prefixes, strict=False):
                counter.add_file(path, prefix=prefix, progress=bar.update)
    except BaseException:
        counter.close()
        raise
    return counter


def _contig_report(counter: FragmentCounter, paths: list[Path]) -> dict:
    """uns['ingest'] entries about contigs, and the 'nothing matches this genome' error."""
    genome: Genome = counter.bins.genome
    modelled = {c: n for c, n in counter.contigs.items() if genome.chrom_index(c) is not None}
    other = {c: n for c, n in counter.contigs.items() if c not in modelled}
    known = set(genome.extra_sizes) | {genome.mito_name}
    unknown = {c: n for c, n in other.items() if normalize_chrom(c) not in known}
    excluded = {c: n for c, n in other.items() if c not in unknown}
    if counter.contigs and not counter.stats["n_main"].any():
        seen = ", ".join(f"{c} ({n})" for c, n in sorted(counter.contigs.items(), key=lambda x: -x[1])[:8])
        why = (f"{counter.beyond_end} fragments end past the end of their chromosome" if modelled
               else f"no contig is a chromosome of genome {genome.name!r} ({genome.chroms[0]}…{genome.chroms[-1]})")
        raise ValueError(
            f"{', '.join(map(str, paths))}: no fragment could be counted: {why}; contigs seen: {seen}. "
            "Is it the right genome (hg19 vs hg38 vs mm10) and chromosome naming (chr1 vs 1 vs NC_000001)? "
            "Pass --genome or a chrom-sizes file."
        )
    if unknown:
        logger.warning("%d fragments on %d contigs not in genome %s were skipped (e.g. %s)",
                       sum(unknown.values()), len(unknown), genome.name, ", ".join(list(unknown)[:5]))
    if counter.beyond_end:
        logger.warning("%d fragments end past their chromosome's end in genome %s: wrong genome build "
                       "(hg19 vs hg38)? They were skipped.", counter.beyond_end, genome.name)
    return {
        "unknown_contigs": np.array(list(unknown), dtype=object).astype(str),
        "unknown_contig_fragments": np.array(list(unknown.values()), dtype=np.int64),
        "excluded_contigs": np.array(list(excluded), dtype=object).astype(str),
        "excluded_contig_fragments": np.array(list(excluded.values()), dtype=np.int64),
        "n_fragments_unknown_contigs": int(sum(unknown.values())),
        "n_fragments_beyond_chrom_end": int(counter.beyond_end),
    }


def _barcodes(names: np.ndarray, samples: list[str], sample_idx: np.ndarray) -> np.ndarray:
    """Raw barcodes: cell names without their ``sample#`` prefix (exact even when a sample name has a ``#``)."""
    if len(samples) == 1:
        return names
    cut = np.array([len(s) + 1 for s in samples])[sample_idx]
    return np.array([n[k:] for n, k in zip(names.tolist(), cut.tolist(), strict=False)], dtype=object)


def _no_cells_error(paths, n: int, best: int, opts: FragmentOptions, n_labelled: int | None, counter) -> ValueError:
    return ValueError(
        f"{', '.join(map(str, paths))}: no cells left after filters: {n} barcodes seen (most unique fragments in "
        f"one barcode: {best}), min_fragments={opts.min_fragments}, max_fragments={opts.max_fragments}"
        + (f", {n_labelled} barcodes in the labels table" if n_labelled is not None else "")
        + (f", whitelist dropped {counter.n_filtered_barcode} fragments" if counter.whitelist is not None else "")
    )


def _obs_and_keep(counter: FragmentCounter, samples: list[str], paths, opts: FragmentOptions
                  ) -> tuple[pd.DataFrame, np.ndarray]:
    """obs of the kept cells (QC + sample + labels) and the (n_barcodes,) keep mask."""
    names = np.array(counter.cell_names, dtype=object)
    n = names.size
    sample_idx = np.searchsorted(np.asarray(counter.sample_starts), np.arange(n), side="right") - 1
    n_unique = counter.stats["n_unique"]
    keep = n_unique >= opts.min_fragments
    if opts.max_fragments is not None:
        keep &= n_unique <= opts.max_fragments
    raw = _barcodes(names, samples, sample_idx)
    table = None
    if opts.labels is not None:
        table = read_labels(opts.labels, known=set(names.tolist()) | set(raw.tolist()))
        key = np.where(pd.Index(names).isin(table.index), names, raw)
        labelled = pd.Index(key).isin(table.index)
        keep &= labelled
    if not keep.any():
        raise _no_cells_error(paths, n, int(n_unique.max()) if n else 0, opts,
                              None if table is None else int(labelled.sum()), counter)
    rows = np.flatnonzero(keep)
    obs = counter.stats.to_obs(pd.Index(names[rows].astype(str), name="cell"), rows,
                               has_genes=counter.qc.has_genes)
    obs.insert(0, "sample", pd.Categorical(np.asarray(samples)[sample_idx[rows]], categories=samples))
    obs.insert(1, "barcode", raw[rows].astype(str))
    if table is not None:
        joined = table.loc[key[rows]].set_axis(obs.index)
        for col in joined.columns:
            values = joined[col]
            obs[col] = pd.Categorical(values) if values.dtype == object else values.to_numpy()
    return obs, keep


def _check_duplicates(counter: FragmentCounter, paths, allow: bool) -> dict:
    """Exact duplicate lines (not PCR duplicates, which are one line with a count): an error above
    :data:`MAX_DUPLICATE_FRACTION` of the lines unless ``allow``, a warning below."""
    dups = counter.duplicates
    n_dup, n_lines = dups.count(), dups.n_lines
    report = {"n_duplicate_lines": n_dup, "duplicate_lines_exact": dups.exact}
    if n_dup == 0:
        return report
    about = "" if dups.exact else "about "
    msg = (f"{', '.join(map(str, paths))}: {about}{n_dup} of {n_lines} fragment lines ({n_dup / n_lines:.1%}) "
           "are exact copies of another line (same barcode, chrom, start, end) — a file concatenated with "
           "itself or merged twice? PCR duplicates are one line with a count, so copies would be counted as "
           "different fragments")
    if n_dup > MAX_DUPLICATE_FRACTION * n_lines and not allow:
        raise ValueError(msg + "; de-duplicate it (e.g. `sort -u`) or pass --allow-duplicate-lines to count "
                         "every line as it is")
    logger.warning("%s; every line was counted as it is", msg)
    return report


def _in_background(fn) -> Future:
    """Run ``fn()`` in a thread; used for ``var`` (606k bin names for hg38 at 5 kb), built while the main
    thread mostly waits for the fragment reader."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def _prepare(paths, genome, bin_size, opts: FragmentOptions):
    bins = get_genome(genome).bins(bin_size)
    bins.check_memory()
    from ..pp.region_classes import bin_var

    var = _in_background(lambda: bin_var(bins))  # bins.var() + var['region_class'] (built-in genomes)
    samples = sample_names_for(paths, opts.sample_names)
    counter = _count(paths, bins, counting=opts.counting, whitelist=opts.whitelist, samples=samples)
    try:
        report = _contig_report(counter, paths)
        report |= _check_duplicates(counter, paths, opts.allow_duplicate_lines)
        n_counted = int(counter.stats["n_main"].sum()) + counter.beyond_end
        chroms, pos = counter.positions.arrays()
        report |= check_build(bins.genome, chroms, pos, n_past_end=counter.beyond_end, n_total=n_counted,
                              what=", ".join(map(str, paths)) + ": fragments", force=opts.force_genome)
        obs, keep = _obs_and_keep(counter, samples, paths, opts)
    except BaseException:
        counter.close()
        raise
    uns = bins.uns()
    uns["ingest"] = {
        "inputs": [str(p) for p in paths], "samples": samples, "counting": opts.counting,
        "min_fragments": int(opts.min_fragments),
        "max_fragments": -1 if opts.max_fragments is None else int(opts.max_fragments),
        "n_barcodes": int(keep.size), "n_cells": int(keep.sum()), **report,
    }
    logger.info("%d of %d barcodes kept as cells", keep.sum(), keep.size)
    budget = 2 * counter.stats["n_main"]
    return counter, var.result(), obs, keep, uns, budget


def _blocks(counter: FragmentCounter, keep: np.ndarray, budget: np.ndarray) -> Iterator[sp.csr_matrix]:
    total = int(keep.sum())
    with tqdm(total=total, unit="cells", desc="writing counts", disable=None) as bar:
        for block in counter.store.blocks(keep, budget):
            bar.update(block.shape[0])
            yield block


def read_fragments(
    paths: PathLike | Iterable[PathLike],
    *,
    genome: str | Genome = "hg38",
    bin_size: int = DEFAULT_BIN_SIZE,
    counting: str = "insertion",
    min_fragments: int = DEFAULT_MIN_FRAGMENTS,
    max_fragments: int | None = None,
    whitelist: PathLike | Iterable[str] | None = None,
    labels: PathLike | pd.DataFrame | None = None,
    sample_names: Sequence[str] | None = None,
    allow_duplicate_lines: bool = False,
    force_genome: bool = False,
) -> ad.AnnData:
    """Read 10x fragment files into a cells × bins AnnData (CSR int32 counts of Tn5 insertions or fragments).

    Cells are barcodes with ``min_fragments ≤ n_unique ≤ max_fragments`` (and in ``whitelist`` / the
    ``labels`` table when given; label columns are joined into ``obs``). ``obs`` holds the QC columns of
    :mod:`atacformer.io._qc`; ``var`` is :meth:`BinIndex.var`; ``uns`` has genome, bin size and ``ingest``.

    Refused (``ValueError``) unless allowed: more than 1 % exact duplicate lines (``allow_duplicate_lines``)
    and data that look like another genome build than ``genome`` (``force_genome``; see
    :mod:`atacformer.io._build`). Piped inputs (``/dev/stdin``) are copied to a temporary file first.
    """
    opts = FragmentOptions(counting, min_fragments, max_fragments, whitelist, labels, sample_names,
                           allow_duplicate_lines, force_genome)
    with spooled(_as_paths(paths)) as files:
        counter, var, obs, keep, uns, budget = _prepare(files, genome, bin_size, opts)
        try:
            blocks = list(_blocks(counter, keep, budget))
        finally:
            counter.close()
    X = sp.vstack(blocks, format="csr").astype(np.int32) if blocks else sp.csr_matrix((0, len(var)))
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns)


def ingest_fragments(
    paths: PathLike | Iterable[PathLike],
    out: PathLike,
    *,
    genome: str | Genome = "hg38",
    bin_size: int = DEFAULT_BIN_SIZE,
    counting: str = "insertion",
    min_fragments: int = DEFAULT_MIN_FRAGMENTS,
    max_fragments: int | None = None,
    whitelist: PathLike | Iterable[str] | None = None,
    labels: PathLike | pd.DataFrame | None = None,
    sample_names: Sequence[str] | None = None,
    allow_duplicate_lines: bool = False,
    force_genome: bool = False,
) -> Path:
    """Like :func:`read_fragments`, but streams the matrix straight into the h5ad ``out`` in bounded memory
    (peak memory does not grow with the input size). Written atomically. Returns ``out``."""
    opts = FragmentOptions(counting, min_fragments, max_fragments, whitelist, labels, sample_names,
                           allow_duplicate_lines, force_genome)
    with spooled(_as_paths(paths)) as files:
        counter, var, obs, keep, uns, budget = _prepare(files, genome, bin_size, opts)
        try:
            max_nnz = min(int(budget[keep].sum()), counter.store.n_entries)
            return write_csr_h5ad(out, obs=obs, var=var, uns=uns, blocks=_blocks(counter, keep, budget),
                                  max_nnz=max_nnz)
        finally:
            counter.close()
