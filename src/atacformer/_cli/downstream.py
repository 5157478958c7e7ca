"""``atacformer finetune | annotate | map | integrate | evaluate | demo``: thin wrappers over
:mod:`atacformer.tl` and :mod:`atacformer.metrics`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _read(path: str):
    from ..io import read_h5ad

    return read_h5ad(path)


def _model(path: str):
    from ..models import Atacformer

    return Atacformer.from_pretrained(path)


def _write(adata, path: str) -> None:
    from ..io import write_h5ad

    write_h5ad(adata, path)
    print(f"wrote {path} ({adata.n_obs} cells)")


FMT = argparse.ArgumentDefaultsHelpFormatter


def register(subparsers) -> None:
    for add in (_add_finetune, _add_annotate, _add_map, _add_integrate, _add_evaluate, _add_demo):
        add(subparsers)


def _add_finetune(subparsers) -> None:
    from ..train import FinetuneRecipe

    fr, fmt = FinetuneRecipe(), FMT
    p = subparsers.add_parser("finetune", help="fine-tune <cls> label heads on labelled cells or region sets",
                              description="Fine-tune a copy of a pretrained model to predict one or more label "
                                          "columns, one head each (atacformer.train.FinetuneRecipe), early-stopped "
                                          "on a validation split. Rows missing a label are ignored by its head.",
                              formatter_class=fmt)
    p.add_argument("input", help="cells × bins (or region sets × bins) .h5ad with label columns in obs")
    p.add_argument("--model", required=True, help="pretrained model folder")
    p.add_argument("-o", "--output", required=True, help="folder for the fine-tuned model (+ checkpoints/, logs/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in the output folder")
    p.add_argument("--labels-key", default="cell_type",
                   help="obs column(s) to predict, comma-separated (e.g. cell_type,assay): one head each")
    p.add_argument("--stratify-key", help="obs column (e.g. donor) to stratify the validation split by, too")
    p.add_argument("--trainable-layers", type=int, help="train only the last N encoder layers (default all)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"at most this many epochs (default {fr.epochs}; region sets from BED files: "
                        f"{FinetuneRecipe.region_sets().epochs})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {fr.optimizer.lr}; region sets: "
                        f"{FinetuneRecipe.region_sets().optimizer.lr})")
    p.add_argument("--resume", default=None, help="'last' or a checkpoint of an interrupted fine-tune")
    p.add_argument("--seed", type=int, default=fr.seed, help="random seed")
    p.set_defaults(func=_finetune)


def _add_annotate(subparsers) -> None:
    from ..tl.embed import REGION_SET_SUBSETS

    fmt = FMT
    p = subparsers.add_parser("annotate", help="predict labels (cell type, assay, ...) with a fine-tuned model",
                              description="Predict every label column of a fine-tuned model (label + confidence "
                                          "per column) for cells or region sets.", formatter_class=fmt)
    p.add_argument("input", help="cells × bins (or region sets × bins) .h5ad")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    p.add_argument("-o", "--output", required=True, help="output .h5ad")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--threshold", type=float, default=0.5, help='confidence below this → "unknown"')
    p.add_argument("--key-added", default="atacformer_label",
                   help="obs column of the labels (with several heads: KEY_<column> per column)")
    p.add_argument("--n-subsets", type=int, default=None,
                   help="random subsets averaged per row longer than max_length (default: "
                        f"{REGION_SET_SUBSETS} for region sets from BED files, 1 for cells)")
    p.set_defaults(func=_annotate)


def _add_map(subparsers) -> None:
    fmt = FMT
    p = subparsers.add_parser("map", help="map query cells onto a labelled reference (kNN label transfer)",
                              description="Embed query cells with the reference model and transfer labels by kNN.",
                              formatter_class=fmt)
    p.add_argument("query", help="query cells × bins .h5ad")
    p.add_argument("--reference", required=True, help="labelled reference .h5ad")
    p.add_argument("--model", required=True, help="reference model folder")
    p.add_argument("-o", "--output", required=True, help="output query .h5ad")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--labels-key", default="cell_type", help="reference obs column to transfer")
    p.add_argument("--n-neighbors", type=int, default=15, help="reference neighbours per vote")
    p.add_argument("--query-epochs", type=int, default=0, help="query-only fine-tune epochs (reference frozen)")
    p.set_defaults(func=_map)


def _add_integrate(subparsers) -> None:
    from ..train import IntegrateRecipe

    ir, fmt = IntegrateRecipe(), FMT
    p = subparsers.add_parser("integrate", help="adversarial batch correction; writes a corrected embedding",
                              description="Batch-correct cell embeddings across an obs column "
                                          "(atacformer.train.IntegrateRecipe).", formatter_class=fmt)
    p.add_argument("input", help="cells × bins .h5ad")
    p.add_argument("--model", required=True, help="pretrained model folder")
    p.add_argument("--batch-key", required=True, help="obs column of the batches to mix")
    p.add_argument("-o", "--output", required=True, help="output .h5ad (obsm['X_atacformer_integrated'])")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--save-model", help="also save the corrected model to this folder")
    p.add_argument("--epochs", type=int, default=ir.epochs, help="epochs")
    p.add_argument("--adversary-weight", type=float, default=ir.adversary_weight, help="reversed-gradient scale")
    p.add_argument("--no-correct", action="store_true", help="skip the final MNN correction (model output only)")
    p.add_argument("--reference-batch", default=None, help="batch the others are corrected toward (default: largest)")
    p.add_argument("--seed", type=int, default=ir.seed, help="random seed")
    p.set_defaults(func=_integrate)


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="metrics vs labels and LSI/spectral baselines → JSON + Markdown",
        description="Score embeddings of a cells × bins .h5ad against its labels (and batches) beside the LSI and "
        "spectral baselines computed on the same bins: every embedding is clustered with Leiden to as many "
        "clusters as labels; ARI, NMI, kNN accuracy, cell-type ASW, graph connectivity, and with --batch-key "
        "iLISI, kBET, batch ASW. Writes metrics.json and metrics.md.")
    p.add_argument("input", help="cells × bins .h5ad with labels in obs")
    p.add_argument("--labels-key", default="cell_type", help="obs column of the cell-type labels (default: cell_type)")
    p.add_argument("--batch-key", help="obs column of the batches: adds the batch-mixing metrics")
    p.add_argument("--reference-batch", help="score kNN label transfer from this batch to the others")
    p.add_argument("--model", help="embed with this model (obsm['X_atacformer'])")
    p.add_argument("--rep", action="append", default=[], metavar="NAME=OBSM_KEY", help="extra embeddings to score")
    p.add_argument("-o", "--output", required=True, help="output folder (metrics.json, metrics.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the baselines and Leiden (default: 0)")
    p.set_defaults(func=_evaluate)


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole workflow on the shipped data → report.html (CPU, offline)",
        description="Ingest the shipped PBSmall fragments and hemato peak matrix, pretrain the tiny model without "
        "labels, embed, cluster and score beside LSI/spectral baselines, fine-tune cell-type annotation across "
        "donors, correct the donor batch effect, train CRAFT on paired SNARE-seq RNA + ATAC cells, and write "
        "report.html, metrics tables, figures/ and the annotated cells (hemato.h5ad, pbsmall.h5ad) for scanpy. "
        "About 3 min on 2 idle CPU cores (--quick: about a minute).")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--quick", action="store_true", help="reduced mode (seconds of training; for CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default: 0)")
    p.set_defaults(func=_demo)


def _refuse_existing(path: str | None, overwrite: bool) -> None:
    from .common import check_output

    if path is not None:
        check_output(path, overwrite)


def _finetune(args: argparse.Namespace) -> int:
    from ..tl import finetune
    from ..tl.annotate import default_recipe

    if args.resume is None:
        _refuse_existing(str(Path(args.output) / "config.json"), args.overwrite)
    adata, model = _read(args.input), _model(args.model)
    base = default_recipe(adata)
    recipe = base.replace(epochs=base.epochs if args.epochs is None else args.epochs, seed=args.seed,
                          trainable_layers=args.trainable_layers,
                          optimizer={"lr": base.optimizer.lr if args.lr is None else args.lr})
    tuned = finetune(adata, model, labels_key=args.labels_key, batch_key=args.stratify_key, recipe=recipe,
                     out_dir=args.output, resume=args.resume)
    tuned.save_pretrained(args.output)
    info = adata.uns["atacformer_finetune"]
    hist = info["history"]
    heads = ", ".join(f"{col} ({len(names)} classes)" for col, names in info["heads"].items())
    print(f"fine-tuned {heads}: {len(hist)} epochs; best val loss {info['best_val_loss']:.4f} "
          f"(epoch {info['best_epoch']}), last val accuracy {hist['val_accuracy'].iloc[-1]:.3f}; "
          f"saved to {args.output}")
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from ..tl import annotate

    _refuse_existing(args.output, args.overwrite)
    adata = _read(args.input)
    annotate(adata, _model(args.model), threshold=args.threshold, key_added=args.key_added, n_subsets=args.n_subsets)
    for col, info in adata.uns[args.key_added]["columns"].items():
        print(f"{col}:\n" + adata.obs[info["key"]].value_counts().to_string())
    _write(adata, args.output)
    return 0


def _map(args: argparse.Namespace) -> int:
    from ..tl import map_query
    from ..train import QueryRecipe

    _refuse_existing(args.output, args.overwrite)
    query = _read(args.query)
    map_query(query, _read(args.reference), _model(args.model), labels_key=args.labels_key,
              n_neighbors=args.n_neighbors, recipe=QueryRecipe(epochs=args.query_epochs))
    print(query.obs["atacformer_mapped"].value_counts().to_string())
    print(f"median uncertainty {query.obs['atacformer_mapped_uncertainty'].median():.3f}")
    _write(query, args.output)
    return 0


def _integrate(args: argparse.Namespace) -> int:
    from ..metrics import ilisi
    from ..models.model import WEIGHTS_FILE
    from ..tl import integrate_model
    from ..tl.integrate import write_integrated
    from ..train import IntegrateRecipe

    _refuse_existing(args.output, args.overwrite)
    if args.save_model:
        _refuse_existing(str(Path(args.save_model) / WEIGHTS_FILE), args.overwrite)
    adata, model = _read(args.input), _model(args.model)
    recipe = IntegrateRecipe(epochs=args.epochs, adversary_weight=args.adversary_weight, correct=not args.no_correct,
                             seed=args.seed)
    corrected, history = integrate_model(adata, model, batch_key=args.batch_key, recipe=recipe)
    write_integrated(adata, corrected, history, batch_key=args.batch_key, recipe=recipe,
                     reference_batch=args.reference_batch, key_added="X_atacformer_integrated")
    emb = adata.obsm["X_atacformer_integrated"]
    print(f"iLISI of the corrected embedding: {ilisi(emb, adata.obs[args.batch_key]):.3f}")
    if args.save_model:
        corrected.save_pretrained(args.save_model)
    _write(adata, args.output)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..metrics import to_markdown
    from ..tl import embed, evaluate, lsi, spectral, write_evaluation

    adata = _read(args.input)
    reps = {}
    if args.model:
        embed(adata, _model(args.model), key_added="X_atacformer")
        reps["atacformer"] = "X_atacformer"
    for item in args.rep:
        name, _, key = item.partition("=")
        if not key or key not in adata.obsm:
            raise ValueError(f"--rep {item!r}: expected NAME=OBSM_KEY with a key of {sorted(adata.obsm)}")
        reps[name] = key
    lsi(adata, seed=args.seed)
    spectral(adata, seed=args.seed)
    reps.update(LSI="X_lsi", spectral="X_spectral")
    table = evaluate(adata, reps=reps, labels_key=args.labels_key, batch_key=args.batch_key,
                     reference_batch=args.reference_batch, seed=args.seed)
    write_evaluation(table, args.output, extra={"input": args.input, "spectral_implementation":
                                                adata.uns["X_spectral"]["implementation"]})
    print(to_markdown(table), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(args.output, quick=args.quick, seed=args.seed)
    print(f"report: {report}")
    return 0
