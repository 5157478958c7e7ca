"""Rebuild the shipped base-class runs ``{genome}_classes.tsv.gz`` from the source annotation tables.

    python src/atacformer/data/annotation/build_annotation.py /path/to/reference/annotation

Sources (see ``data/ATTRIBUTION.md``): GENCODE v25 (hg38) / vM11 (mm10) features merged per gene
(saketkc/riboraptor), and ArchR's hg19 genes, exons and TSSs. Only chromosomes the built-in genome
models are kept (chr1..N, chrX). The output is the flattened base classes of
:mod:`atacformer.pp.region_classes` (step 1), one disjoint run a line: ``chrom``, ``gap`` (bases
since the previous run's end on that chromosome; the first run's is its start), ``length``, class code
(index into the ``#classes=`` header) — a delta encoding that gzips to a fraction of plain BED.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from atacformer.genome import get_genome
from atacformer.pp.region_classes import (
    builtin_classes,
    flatten_intervals,
    gene_intervals,
    write_runs,
)

COLS = ["chrom", "start", "end", "name", "score", "strand"]


def _bed(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", header=None, usecols=range(6), dtype={0: str})
    df.columns = COLS
    return df


def intervals(root: Path, genome: str) -> pd.DataFrame:
    if genome == "hg19":
        d = root / "hg19"
        return gene_intervals(_bed(d / "hg19_genes.bed.gz"), {"exon": _bed(d / "hg19_exons.bed.gz")},
                              tss=_bed(d / "hg19_TSS.bed.gz"))
    d = root / {"hg38": "hg38/v25", "mm10": "mm10/vM11"}[genome]
    feats = {"CDS": _bed(d / "cds.bed.gz"), "5UTR": _bed(d / "utr5.bed.gz"), "3UTR": _bed(d / "utr3.bed.gz"),
             "ncRNA": _bed(d / "exon.bed.gz")}  # exonic bases that are no CDS/UTR: non-coding transcripts
    return gene_intervals(_bed(d / "gene.bed.gz"), feats)


def main(root: str) -> None:
    for name in ("hg38", "hg19", "mm10"):
        genome = get_genome(name)
        classes = builtin_classes(name)
        runs = flatten_intervals(intervals(Path(root), name), genome, classes)
        out = Path(__file__).with_name(f"{name}_classes.tsv.gz")
        write_runs(runs, classes, out)
        print(f"{name}: {len(runs):,} runs, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1])
