"""Pseudo-bulk epigenome tracks from the package's own single-cell data: a fragments file plus cell-type
labels → Tn5 insertion counts per cell type in 128 bp bins.

Each fragment ``[start, end)`` contributes two insertions, at ``start`` and ``end - 1`` (0-based), once
per fragment whatever its duplicate count (the usual ArchR/SnapATAC convention). Barcodes without a
label and chromosomes outside ``chrom_sizes`` are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from ..genome import normalize_chrom
from ..io import iter_fragments
from .data import n_bins


def read_labels(path: str | Path, *, barcode_col: str = "barcode", label_col: str = "cell_type") -> pd.Series:
    """A TSV with ``barcode`` and ``cell_type`` columns → Series barcode → cell type."""
    df = pd.read_csv(path, sep="\t", dtype=str)
    missing = {barcode_col, label_col} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: labels table lacks column(s) {sorted(missing)}")
    if df[barcode_col].duplicated().any():
        dup = df.loc[df[barcode_col].duplicated(), barcode_col].iloc[0]
        raise ValueError(f"{path}: barcode {dup!r} appears more than once")
    return df.set_index(barcode_col)[label_col]


def pseudobulk_tracks(
    fragments: str | Path,
    labels: pd.Series,
    chrom_sizes: dict[str, int],
    *,
    bin_size: int = 128,
    cell_types: list[str] | None = None,
    chunk_size: int = 16 << 20,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Insertion counts per cell type: ``({chrom: (C, n_bins) float32}, cell_types)``.

    ``labels`` maps barcode → cell type (e.g. from :func:`read_labels`); ``cell_types`` fixes the order
    (default: sorted unique labels).
    """
    cts = list(cell_types) if cell_types is not None else sorted(labels.dropna().unique())
    ct_index = {c: i for i, c in enumerate(cts)}
    chroms = list(chrom_sizes)
    sizes = np.array([chrom_sizes[c] for c in chroms], dtype=np.int64)
    nb = np.array([n_bins(s, bin_size) for s in sizes], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(nb)])  # global bin id = offset[chrom] + local bin
    counts = np.zeros(len(cts) * offset[-1], dtype=np.float32)  # (C * total_bins,) flat
    for chunk in iter_fragments(fragments, chunk_size=chunk_size):
        chrom_map = np.array([chroms.index(normalize_chrom(c)) if normalize_chrom(c) in chroms else -1
                              for c in chunk.chrom_names], dtype=np.int64)
        ct_map = np.array([ct_index.get(labels.get(b), -1) for b in chunk.barcode_names], dtype=np.int64)
        ci = chrom_map[chunk.chrom_codes]  # (n,)
        ti = ct_map[chunk.barcode_codes]  # (n,)
        for pos in (chunk.start, chunk.end - 1):
            ok = (ci >= 0) & (ti >= 0)
            ok[ok] &= pos[ok] < sizes[ci[ok]]
            flat = ti[ok] * offset[-1] + offset[ci[ok]] + pos[ok] // bin_size
            ids, n = np.unique(flat, return_counts=True)
            counts[ids] += n
    counts = counts.reshape(len(cts), offset[-1])
    return {c: counts[:, offset[i] : offset[i + 1]] for i, c in enumerate(chroms)}, cts


def write_bedgraph(path: str | Path, track: dict[str, np.ndarray], chrom_sizes: dict[str, int], *,
                   bin_size: int = 128) -> None:
    """Write one ``{chrom: (n_bins,)}`` track as a bedGraph of its non-zero bins (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for chrom, v in track.items():
            for b in np.flatnonzero(v):
                fh.write(f"{chrom}\t{b * bin_size}\t{min((b + 1) * bin_size, chrom_sizes[chrom])}\t{v[b]:g}\n")
