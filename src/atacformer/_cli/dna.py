"""``atacformer dna-embed``: a genome FASTA → per-bin DNA embedding table (k-mer or local NT model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..genome import DEFAULT_BIN_SIZE
from .common import add_overwrite, check_output, remove_output


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dna-embed",
        help="embed the DNA of every genome bin (k-mer spectrum or a local Nucleotide Transformer)",
        description="Compute one DNA embedding per genome bin from an uncompressed FASTA (+ .fai, created "
        "if missing) and write a table directory (embeddings.npy, bins.txt, meta.json) that the model "
        "aligns to its vocabulary by bin name. Interrupted runs resume (finished shards are skipped). "
        "Nothing is downloaded: --method nt needs a saved NT checkpoint directory. A model folder that ships "
        "its own Python code is refused unless --trust-remote-code (loading it runs that code).",
    )
    p.add_argument("--genome", required=True, help="hg38, hg19, mm10 or a chrom-sizes file")
    p.add_argument("--fasta", required=True, help="uncompressed genome FASTA matching --genome")
    p.add_argument("--method", choices=("kmer", "nt"), default="kmer",
                   help="kmer: canonical 6-mer spectrum + GC/CpG/N, random-projected (fast, default); "
                   "nt: Nucleotide Transformer mean embedding (GPU recommended)")
    p.add_argument("--model", help="local NT model directory (for --method nt)")
    p.add_argument("--dim", type=int, help="embedding size for kmer (default 256); nt uses the model's")
    p.add_argument("--bin-size", type=int, default=DEFAULT_BIN_SIZE, help=f"bin size (default {DEFAULT_BIN_SIZE})")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage type (default float16)")
    p.add_argument("--batch-size", type=int, help="bins per NT forward pass (default 16)")
    p.add_argument("--device", help="torch device for nt (default: cuda if available, else cpu)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="nt: allow a model folder with its own modelling code (auto_map); it is run. Off by default")
    p.add_argument("-o", "--output", required=True, help="table directory to write (or resume)")
    add_overwrite(p, "table directory (a finished one; an interrupted build is resumed without it)")
    p.set_defaults(func=run)


def _check_output(out: Path, overwrite: bool) -> None:
    """An interrupted build (build.json, no meta.json) resumes; anything else already there needs --overwrite."""
    if (out / "build.json").is_file() and not (out / "meta.json").exists():
        return
    check_output(out, overwrite, what="DNA table")
    if out.exists():
        remove_output(out)


def run(args: argparse.Namespace) -> int:
    from ..dna import NTOptions, build_table

    _check_output(Path(args.output), args.overwrite)
    nt = NTOptions(batch_size=args.batch_size or 16, device=args.device, trust_remote_code=args.trust_remote_code)
    table = build_table(
        args.genome, args.fasta, out=args.output, method=args.method, model=args.model, dim=args.dim,
        bin_size=args.bin_size, dtype=args.dtype, nt=nt,
    )
    print(f"DNA table {args.output}: {len(table)} bins × {table.dim} ({table.dtype}), genome {table.genome}, "
          f"{table.bin_size} bp bins, source {table.metadata['source_model']}")
    return 0
