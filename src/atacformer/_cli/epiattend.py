"""``atacformer epiattend train|predict|links``: the EpiAttend sequence + epigenome model."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from .._atomic import atomic_path

log = logging.getLogger(__name__)


def _add_inputs(p: argparse.ArgumentParser, *, expression_required: bool) -> None:
    p.add_argument("--fasta", required=True, help="uncompressed genome FASTA (.fai is built if missing)")
    p.add_argument("--tracks", help="manifest TSV: cell_type, channel, path (bigWig or bedGraph)")
    p.add_argument("--fragments", help="fragments file → pseudo-bulk ATAC per cell type (with --labels)")
    p.add_argument("--labels", help="TSV with barcode and cell_type columns (for --fragments)")
    p.add_argument("--expression", required=expression_required,
                   help="TSV: gene, chrom, tss, then one expression column per cell type")


def _load(args, *, cell_types: list[str] | None = None):
    from atacformer.epiattend.inputs import load_data

    return load_data(args.fasta, tracks=args.tracks, fragments=args.fragments, labels=args.labels,
                     expression=args.expression, cell_types=cell_types)


def _write_table(df: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def register(subparsers) -> None:
    p = subparsers.add_parser("epiattend", help="EpiAttend: sequence + epigenome → expression, enhancer–gene links",
                              description="EpiAttend (Enformer-style DNA + epigenome tracks): train on a FASTA and "
                                          "tracks, predict per-gene expression, and score enhancer–gene links "
                                          "(train | predict | links).")
    sub = p.add_subparsers(dest="epiattend_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="train on all chromosomes but the held-out ones")
    _add_inputs(t, expression_required=True)
    t.add_argument("--valid-chroms", type=_csv, default=[], help="comma-separated validation chromosomes")
    t.add_argument("--test-chroms", type=_csv, required=True, help="comma-separated held-out test chromosomes")
    t.add_argument("--regions", help="BED of training regions (windows centred on them); default: tiling")
    t.add_argument("--preset", default="tiny", help="tiny | small | base")
    t.add_argument("--mode", default="both", choices=["both", "sequence", "epigenome"])
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--batch-size", type=int, default=4, help="windows per step (each with all cell types)")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", required=True, help="model folder to write")
    t.set_defaults(func=_train)

    q = sub.add_parser("predict", help="predict expression at each gene's TSS per cell type")
    _add_inputs(q, expression_required=True)
    q.add_argument("--model", required=True, help="model folder from 'epiattend train'")
    q.add_argument("--chroms", type=_csv, help="only genes on these chromosomes (default: the model's test set)")
    q.add_argument("-o", "--output", required=True, help="TSV: gene, cell_type, observed, predicted")
    q.set_defaults(func=_predict)

    k = sub.add_parser("links", help="score enhancer–gene links, with distance and ABC baselines")
    _add_inputs(k, expression_required=True)
    k.add_argument("--model", required=True)
    k.add_argument("--candidates", required=True, help="BED of candidate regions (e.g. peaks)")
    k.add_argument("--max-distance", type=int, default=4000, help="bp from TSS to region centre")
    k.add_argument("--chroms", type=_csv, help="only genes on these chromosomes (default: the model's test set)")
    k.add_argument("--truth", help="TSV gene, region, linked: report AUROC of every score")
    k.add_argument("-o", "--output", required=True, help="TSV: gene, region, cell_type, score, distance, baselines")
    k.set_defaults(func=_links)


def _train(args) -> int:
    from atacformer.epiattend import get_config, pearson, predict_genes, save_model
    from atacformer.epiattend.train import train_on_chromosomes
    from atacformer.epiattend.windows import read_bed_windows

    data, genes = _load(args)
    cfg = get_config(args.preset, mode=args.mode, epi_channels=len(data.channels))
    windows = read_bed_windows(args.regions, seq_len=cfg.seq_len) if args.regions else None
    model, result = train_on_chromosomes(data, cfg, valid=args.valid_chroms, test=args.test_chroms, windows=windows,
                                         steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    meta = {"cell_types": data.cell_types, "channels": data.channels, "valid_chroms": args.valid_chroms,
            "test_chroms": args.test_chroms, "train_loss": result.train_loss, "valid_loss": result.valid_loss}
    test_genes = genes[genes.chrom.isin(args.test_chroms)]
    if len(test_genes):
        pred = predict_genes(model, data, test_genes)
        meta["test_pearson_log1p"] = pearson(np.log1p(pred.observed), np.log1p(pred.predicted))
        print(f"held-out {','.join(args.test_chroms)}: Pearson (log1p) {meta['test_pearson_log1p']:.3f} "
              f"over {len(pred)} gene x cell-type values")
    save_model(model, args.output, meta=meta)
    print(f"wrote {args.output} (loss {result.train_loss[0]:.4f} -> {result.train_loss[-1]:.4f})")
    return 0


def _model_and_data(args):
    from atacformer.epiattend import load_model

    model, meta = load_model(args.model)
    data, genes = _load(args, cell_types=meta.get("cell_types"))
    chroms = args.chroms or meta.get("test_chroms") or data.chroms
    genes = genes[genes.chrom.isin(chroms)].reset_index(drop=True)
    if genes.empty:
        raise ValueError(f"{args.expression}: no genes on chromosome(s) {chroms}")
    return model, data, genes


def _predict(args) -> int:
    from atacformer.epiattend import pearson, predict_genes

    model, data, genes = _model_and_data(args)
    pred = predict_genes(model, data, genes)
    _write_table(pred, args.output)
    print(f"wrote {len(pred)} predictions to {args.output}; Pearson (log1p) "
          f"{pearson(np.log1p(pred.observed), np.log1p(pred.predicted)):.3f}")
    return 0


def _links(args) -> int:
    from atacformer.epiattend import (
        add_baselines,
        link_auroc,
        link_scores,
        summarize_links,
    )
    from atacformer.epiattend.inputs import read_regions

    model, data, genes = _model_and_data(args)
    links = add_baselines(link_scores(model, data, genes, read_regions(args.candidates),
                                      max_distance=args.max_distance))
    _write_table(links, args.output)
    print(f"wrote {len(links)} gene x region x cell-type scores to {args.output}")
    if args.truth:
        auroc = link_auroc(summarize_links(links), pd.read_csv(args.truth, sep="\t"))
        print("AUROC " + "  ".join(f"{k}={v:.3f}" for k, v in auroc.items()))
    return 0
