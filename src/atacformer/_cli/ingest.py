"""``atacformer ingest`` (fragments / BED / region matrix → cells × bins h5ad) and ``atacformer info``."""

from __future__ import annotations

import argparse
import logging

from ..genome import DEFAULT_BIN_SIZE, data_path
from ..io.ingest import DEFAULT_MIN_FRAGMENTS
from .common import add_overwrite, check_output

logger = logging.getLogger(__name__)
DEMO_FRAGMENTS = "pbsmall_fragments_hg19.tsv.gz"
DEMO_LABELS = "pbsmall_labels.tsv"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="fragments, BED files or a peak matrix → cells × bins h5ad",
        description="Bin 10x fragment files (one or many; each a sample), BED/narrowPeak files (one row per "
        "file) or a region count matrix (h5ad, 10x .h5, MatrixMarket folder) into genome-wide bins, with "
        "per-cell QC in obs. The input type is detected from the file's content (--input-type forces it). "
        "Piped input (/dev/stdin, <(zcat ...)) works for fragments. --demo ingests the shipped PBSmall "
        "fragments (hg19, 150 cells) with their cell-type labels.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="fragments .tsv(.gz), .bed/.narrowPeak, .h5ad, .h5 or mtx folder")
    p.add_argument("-o", "--output", required=True, help="output .h5ad (written atomically)")
    p.add_argument("--demo", action="store_true", help="ingest the shipped PBSmall fragments (hg19) with labels")
    p.add_argument("--genome", default=None, help="hg38 (default), hg19, mm10 or a chrom-sizes file")
    p.add_argument("--bin-size", type=int, default=DEFAULT_BIN_SIZE,
                   help=f"bin size in bp (default {DEFAULT_BIN_SIZE})")
    p.add_argument("--counting", choices=("insertion", "fragment"), default="insertion",
                   help="fragments: count Tn5 insertions (default) or fragments per bin")
    p.add_argument("--labels", help="fragments: barcode→label table (tsv/csv with header); keeps labelled cells")
    p.add_argument("--whitelist", help="fragments: file with one barcode per line")
    p.add_argument("--min-fragments", type=int, default=DEFAULT_MIN_FRAGMENTS,
                   help=f"fragments: minimum unique fragments per cell (default {DEFAULT_MIN_FRAGMENTS})")
    p.add_argument("--max-fragments", type=int, default=None, help="fragments: maximum unique fragments per cell")
    p.add_argument("--sample-names", help="comma-separated sample names, one per input (default: from file names)")
    p.add_argument("--sample-table", help="BED inputs: sample table (first column sample name) joined into obs")
    p.add_argument("--input-type", choices=("auto", "fragments", "bed", "matrix"), default="auto",
                   help="input type (default auto: detected from the content)")
    p.add_argument("--force-genome", action="store_true",
                   help="ingest even if the data look like another genome build than --genome")
    p.add_argument("--allow-duplicate-lines", action="store_true",
                   help="fragments: count exact duplicate lines (> 1%% of lines is an error without this)")
    add_overwrite(p, "output file")
    p.set_defaults(func=run_ingest)

    q = subparsers.add_parser("info", help="shape, genome, bin size and QC summary of a cells × bins h5ad",
                              description="Print the shape, genome, bin size, labels and per-cell QC summary of a "
                                          "cells × bins .h5ad written by `atacformer ingest`.")
    q.add_argument("file", help=".h5ad made by atacformer ingest")
    q.set_defaults(func=run_info)


def _fragment_options(args: argparse.Namespace) -> dict:
    opts = {"counting": args.counting, "min_fragments": args.min_fragments, "max_fragments": args.max_fragments,
            "labels": args.labels, "whitelist": args.whitelist, "force_genome": args.force_genome,
            "allow_duplicate_lines": args.allow_duplicate_lines}
    if args.sample_names:
        opts["sample_names"] = [s.strip() for s in args.sample_names.split(",")]
    return opts


def run_ingest(args: argparse.Namespace) -> int:
    if args.demo:
        if args.inputs:
            raise ValueError("--demo takes no INPUT files")
        args.inputs = [str(data_path(DEMO_FRAGMENTS))]
        args.genome = args.genome or "hg19"
        args.labels = args.labels or str(data_path(DEMO_LABELS))
    if not args.inputs:
        raise ValueError("give INPUT files, or --demo")
    genome = args.genome or "hg38"
    from pathlib import Path

    from ..io import ingest
    from ..io.detect import input_kind, spooled
    from ..io.write import h5ad_shape

    check_output(args.output, args.overwrite)
    with spooled([Path(p) for p in args.inputs]) as inputs:
        kind = input_kind(inputs, args.input_type)
        if kind == "fragments":
            opts = _fragment_options(args)
        elif kind == "bed":
            opts = {"sample_table": args.sample_table, "force_genome": args.force_genome}
        else:
            opts = {"force_genome": args.force_genome}
        out = ingest(inputs, args.output, genome=genome, bin_size=args.bin_size, input_type=kind, **opts)
    n_obs, n_vars = h5ad_shape(out)
    print(f"wrote {out}: {n_obs} cells × {n_vars} bins ({genome}, {args.bin_size} bp bins; input type {kind})")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..io.write import read_h5ad
    from ..pp import qc_summary

    adata = read_h5ad(args.file)
    uns = adata.uns
    print(f"{args.file}: {adata.n_obs} cells × {adata.n_vars} bins")
    print(f"genome: {uns.get('genome', '?')}   bin size: {uns.get('bin_size', '?')}")
    if "sample" in adata.obs.columns:
        counts = adata.obs["sample"].value_counts()
        print("samples: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    if adata.X is not None:
        nnz = adata.X.nnz if hasattr(adata.X, "nnz") else int((adata.X != 0).sum())
        print(f"non-zero entries: {nnz} ({nnz / max(adata.n_obs * adata.n_vars, 1):.2e} of the matrix)")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("QC summary:")
        print(qc_summary(adata).to_string())
    return 0
