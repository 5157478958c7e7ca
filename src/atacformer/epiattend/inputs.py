"""Assemble :class:`~atacformer.epiattend.data.EpiData` from files: a FASTA, epigenome tracks (a
manifest of bigWig/bedGraph files, or fragments + cell-type labels → pseudo-bulk ATAC) and an
optional per-gene expression table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..genome import normalize_chrom
from .data import (
    EpiData,
    GenomeSequence,
    gene_targets,
    read_expression,
    read_manifest,
    stack_tracks,
)
from .pseudobulk import pseudobulk_tracks, read_labels


def load_data(
    fasta: str | Path,
    *,
    tracks: str | Path | None = None,
    fragments: str | Path | None = None,
    labels: str | Path | None = None,
    expression: str | Path | None = None,
    cell_types: list[str] | None = None,
    bin_size: int = 128,
    in_memory: bool = True,
) -> tuple[EpiData, pd.DataFrame | None]:
    """Load the inputs of an EpiAttend run → (EpiData, genes table or None).

    Exactly one of ``tracks`` (manifest TSV: ``cell_type, channel, path``) or ``fragments`` +
    ``labels`` (TSV ``barcode, cell_type``; gives one channel ``atac``) is required. ``expression``
    (TSV ``gene, chrom, tss, <cell type>...``) supplies per-gene targets at the TSS bins.
    """
    if (tracks is None) == (fragments is None):
        raise ValueError("give either a track manifest (tracks) or fragments + labels, not both or neither")
    genome = GenomeSequence(fasta, in_memory=in_memory)
    sizes = genome.chrom_sizes
    if tracks is not None:
        stacked, cts, channels = stack_tracks(read_manifest(tracks), sizes, cell_types=cell_types, bin_size=bin_size)
    else:
        if labels is None:
            raise ValueError("pseudo-bulk tracks from fragments need a labels table (barcode, cell_type)")
        counts, cts = pseudobulk_tracks(fragments, read_labels(labels), sizes, bin_size=bin_size, cell_types=cell_types)
        stacked, channels = {c: a[:, None, :] for c, a in counts.items()}, ["atac"]
    genes, targets = None, None
    if expression is not None:
        genes, values = read_expression(expression)
        unknown = sorted(set(genes.chrom) - set(sizes))
        if unknown:
            raise ValueError(f"{expression}: chromosome(s) {unknown[:5]} are not in {fasta}")
        targets = gene_targets(genes, values, sizes, cts, bin_size=bin_size)
    return EpiData(genome, stacked, cts, channels, targets, bin_size=bin_size), genes


def read_regions(path: str | Path) -> pd.DataFrame:
    """Candidate regions from a BED (``chrom start end [name]``) → ``region, chrom, start, end``
    (region = the name column, or ``chrom:start-end``)."""
    path = Path(path)
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            f = line.rstrip("\n").split("\t")
            try:
                chrom, start, end = f[0], int(f[1]), int(f[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: expected 'chrom start end [name]', got {line.rstrip()!r}") from None
            if end <= start:
                raise ValueError(f"{path}:{lineno}: region end {end} is not after start {start}")
            name = f[3] if len(f) > 3 and f[3] else f"{chrom}:{start}-{end}"
            rows.append((name, chrom, start, end))
    df = pd.DataFrame(rows, columns=["region", "chrom", "start", "end"])
    df["chrom"] = df["chrom"].map(normalize_chrom)
    return df
