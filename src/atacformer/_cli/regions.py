"""``atacformer regions annotate | specific``: region classes of bins, and group-specific bins of a model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    group = subparsers.add_parser("regions", help="region classes of bins; group-specific bins and promoter candidates",
                                  description="annotate: one region class per genome bin (HOMER-style priority); "
                                              "specific: contextual region embeddings, group-specific bins and "
                                              "unannotated promoter candidates of a model.")
    sub = group.add_subparsers(dest="regions_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("annotate", help="one region class per bin (promoter, TTS, CDS, UTRs, ncRNA, intron, "
                                        "intergenic, or your own) → bin<TAB>class TSV")
    p.add_argument("--genome", default="hg38", help="hg38, hg19, mm10 or a chrom-sizes file (default hg38)")
    p.add_argument("--bin-size", type=int, default=5000)
    p.add_argument("--classes", help="your classes: BED (4th column = class), HOMER annotatePeaks.pl output or "
                                     "bin<TAB>class TSV (default: the built-in gene annotation)")
    p.add_argument("--priority", help="comma-separated priority of the classes in --classes, highest first")
    p.add_argument("--min-fraction", type=float, default=0.1,
                   help="a bin takes the highest-priority class covering this fraction of it (default 0.1)")
    p.add_argument("-o", "--output", required=True, help="output TSV (bin, region_class)")
    p.set_defaults(func=_annotate)

    p = sub.add_parser("specific", help="contextual region embeddings, group-specific bins, promoter candidates")
    p.add_argument("input")
    p.add_argument("--model", required=True)
    p.add_argument("--groupby", required=True)
    p.add_argument("-o", "--output", required=True, help="output folder (TSV tables)")
    p.add_argument("--genome", help="genome with gene annotation (default: the data's)")
    p.add_argument("--n-top", type=int, default=20)
    p.set_defaults(func=_specific)


def _annotate(args: argparse.Namespace) -> int:
    from .._atomic import write_text
    from ..pp import region_classes

    priority = args.priority.split(",") if args.priority else None
    table = region_classes(args.genome, args.bin_size, args.classes, min_fraction=args.min_fraction,
                           priority=priority)
    write_text(args.output, table.to_frame().to_csv(sep="\t"))
    sizes = table.value_counts(sort=False)
    print("\n".join(f"{name}\t{n}\t{n / len(table):.1%}" for name, n in sizes.items()))
    print(f"wrote {args.output} ({len(table)} bins)")
    return 0


def _specific(args: argparse.Namespace) -> int:
    import anndata as ad

    from .._atomic import write_text
    from ..models import Atacformer
    from ..tl import region_embeddings, specific_regions, unannotated_promoters

    if not Path(args.input).exists():
        raise FileNotFoundError(f"{args.input}: no such file")
    adata = ad.read_h5ad(args.input)
    region_embeddings(adata, Atacformer.from_pretrained(args.model), groupby=args.groupby)
    out = Path(args.output)
    top = specific_regions(adata, genome=args.genome, n_top=args.n_top)
    write_text(out / "specific_regions.tsv", top.to_csv(sep="\t", index=False))
    cand = unannotated_promoters(adata, genome=args.genome)
    write_text(out / "promoter_candidates.tsv", cand.to_csv(sep="\t", index=False))
    auc = adata.uns["atacformer_promoter_candidates"]["auc"]
    print(f"{len(top)} group-specific bins, {len(cand)} promoter-like bins without an annotated TSS "
          f"(classifier cross-validated AUC {auc:.3f}); tables in {out}")
    return 0
