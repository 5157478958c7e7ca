"""``atacformer tokenize``: cells × bins h5ad (or fragment) files → sharded Parquet corpus."""

from __future__ import annotations

import argparse
import sys

from ..tokenize import DEFAULT_MAX_LENGTH, DEFAULT_OBS_COLUMNS, write_corpus
from ..tokenize.writer import DEFAULT_CELLS_PER_SHARD, DEFAULT_ROW_GROUP_SIZE
from .common import add_overwrite, check_output


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="write a sharded cell-sentence corpus (Parquet) from h5ad files",
        description="Write the open bins of every cell of one or many cells × bins h5ad files (made by "
        "`atacformer ingest`; all on one genome and bin size) or fragment files into a sharded Parquet "
        "corpus folder with vocab.json and corpus.json, streaming so atlases larger than memory work.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="cells × bins .h5ad files or fragments .tsv.gz")
    p.add_argument("-o", "--output", required=True, help="corpus folder to create")
    p.add_argument("--genome", help="genome for fragment inputs (hg38, hg19, mm10 or a chrom-sizes file)")
    p.add_argument("--bin-size", type=int,
                   help="bin size for fragment inputs (default: that of the h5ad inputs, or 5000)")
    p.add_argument("--cells-per-shard", type=int, default=DEFAULT_CELLS_PER_SHARD, metavar="N",
                   help=f"cells per Parquet shard (default {DEFAULT_CELLS_PER_SHARD})")
    p.add_argument("--row-group-size", type=int, default=DEFAULT_ROW_GROUP_SIZE, metavar="N",
                   help=f"cells per row group = read/write block (default {DEFAULT_ROW_GROUP_SIZE})")
    p.add_argument("--obs-columns", default=",".join(DEFAULT_OBS_COLUMNS), metavar="A,B",
                   help=f"obs columns to keep as labels (default {','.join(DEFAULT_OBS_COLUMNS)})")
    p.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="sentence length recorded for training")
    p.add_argument("--seed", type=int, default=0, help="sentence subsampling seed recorded for training")
    add_overwrite(p, "corpus folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output, args.overwrite, what="corpus")
    columns = [c.strip() for c in args.obs_columns.split(",") if c.strip()]
    info = write_corpus(
        args.inputs, args.output, genome=args.genome, bin_size=args.bin_size, obs_columns=columns,
        cells_per_shard=args.cells_per_shard, row_group_size=args.row_group_size, max_length=args.max_length,
        seed=args.seed, overwrite=args.overwrite, progress=sys.stderr.isatty(),
    )
    print(f"corpus {args.output}: {info.n_cells} cells in {len(info.shards)} shards "
          f"({info.genome}, {info.bin_size} bp bins)")
    print(f"median open bins per cell {info.median_n_open:g}, median sentence length "
          f"{info.median_sentence_length:g} (max {info.max_length})")
    for name, n in info.datasets.items():
        print(f"  dataset {name}: {n} cells")
    for column in info.obs_columns:
        if column != "dataset":
            print(f"  {column}: {len(info.labels[column])} labels")
    return 0
