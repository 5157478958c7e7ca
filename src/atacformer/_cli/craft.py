"""``atacformer craft train | embed | impute | transfer``: thin wrappers over the CRAFT tools
(:mod:`atacformer.tl.craft`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models.rna import KINDS


def register(subparsers) -> None:
    from ..models.craft import LIKELIHOODS
    from ..train.craft import CraftRecipe

    r = CraftRecipe()
    fmt = argparse.ArgumentDefaultsHelpFormatter
    group = subparsers.add_parser("craft",
                                  help="joint RNA–ATAC model (CRAFT): train, embed, impute RNA, transfer labels",
                                  description="Contrastive RNA–ATAC fine-tuning on paired multiome cells.")
    sub = group.add_subparsers(dest="craft_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("train", help="train a CRAFT model on paired cells (same obs_names)", formatter_class=fmt,
                       description="Train CRAFT (atacformer.train.craft.CraftRecipe) on paired ATAC and RNA cells. "
                                   "Without --model, an ATAC encoder is pretrained on the ATAC cells first.")
    p.add_argument("--atac", required=True, help="ATAC cells × bins or peaks .h5ad (or 10x .h5 / mtx folder)")
    p.add_argument("--rna", required=True, help="RNA cells × genes raw counts .h5ad (layers['counts'] if present)")
    p.add_argument("--model", help="pretrained ATAC model folder (default: pretrain one on the ATAC cells)")
    p.add_argument("-o", "--output", required=True, help="CRAFT model folder (+ checkpoints/, logs/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in the output folder")
    p.add_argument("--resume", help="'last' or a checkpoint of an interrupted run in the output folder")
    p.add_argument("--steps", type=int, default=r.trainer.max_steps, help="training steps")
    p.add_argument("--batch-size", type=int, default=r.batch_size, help="paired cells per batch")
    p.add_argument("--lr", type=float, default=r.optimizer.lr, help="peak learning rate of the new parts")
    p.add_argument("--rna-encoder", choices=KINDS[:2], default=r.model.rna.kind, help="RNA encoder")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default=r.model.likelihood, help="imputation loss")
    p.add_argument("--pretrain-steps", type=int, default=r.pretrain.trainer.max_steps,
                   help="steps of the on-the-fly ATAC pretraining (without --model)")
    p.add_argument("--genome", help="genome to re-bin an ATAC peak matrix to without --model (default: its uns, hg38)")
    p.add_argument("--seed", type=int, default=r.seed, help="random seed")
    p.set_defaults(func=_train)

    p = sub.add_parser("embed", help="cells of one modality → obsm['X_craft'] (the joint space)", formatter_class=fmt)
    p.add_argument("craft", metavar="CRAFT_DIR", help="CRAFT model folder")
    p.add_argument("input", help="cells × bins/peaks (--modality atac) or cells × genes (rna) .h5ad")
    p.add_argument("--modality", choices=("atac", "rna"), required=True)
    _output(p, "output .h5ad (the input plus obsm['X_craft'])")
    p.set_defaults(func=_embed)

    p = sub.add_parser("impute", help="RNA imputed from ATAC → cells × CRAFT genes .h5ad", formatter_class=fmt)
    p.add_argument("craft", metavar="CRAFT_DIR", help="CRAFT model folder")
    p.add_argument("input", help="ATAC cells × bins or peaks .h5ad")
    _output(p, "output .h5ad (X: imputed log-normalised expression; obs_names kept)")
    p.set_defaults(func=_impute)

    p = sub.add_parser("transfer", help="scRNA labels → scATAC cells by kNN in the joint space", formatter_class=fmt)
    p.add_argument("craft", metavar="CRAFT_DIR", help="CRAFT model folder")
    p.add_argument("--reference", required=True, help="labelled RNA reference .h5ad (raw counts)")
    p.add_argument("--labels-key", default="cell_type", help="reference obs column to transfer")
    p.add_argument("--query", required=True, help="ATAC query cells × bins or peaks .h5ad")
    p.add_argument("--n-neighbors", type=int, default=15, help="reference neighbours per vote")
    p.add_argument("--threshold", type=float, default=0.5, help='vote share below this → "unknown"')
    _output(p, "output query .h5ad (obs['craft_label'], obs['craft_confidence'])")
    p.set_defaults(func=_transfer)


def _output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-o", "--output", required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; use --overwrite to replace it")


def _read(path: str):
    import anndata as ad

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    if Path(path).suffix != ".h5ad":
        from ..io.regions import load_region_matrix

        return load_region_matrix(path)[0]  # a 10x .h5 or MatrixMarket peak matrix
    return ad.read_h5ad(path)


def _write(adata, path: str) -> None:
    from ..io import write_h5ad

    write_h5ad(adata, path)
    print(f"wrote {path} ({adata.n_obs} cells × {adata.n_vars})")


def _train(args: argparse.Namespace) -> int:
    from ..models.craft import CRAFT_CONFIG_FILE
    from ..tl.craft import craft_train
    from ..train.craft import CraftRecipe

    if args.resume is None:
        _refuse_existing(Path(args.output) / CRAFT_CONFIG_FILE, args.overwrite)
    base = CraftRecipe()
    recipe = base.replace(
        model={"likelihood": args.likelihood, "rna": {"kind": args.rna_encoder}}, batch_size=args.batch_size,
        optimizer={"lr": args.lr}, trainer={"max_steps": args.steps}, seed=args.seed,
        pretrain=base.pretrain.replace(trainer={"max_steps": args.pretrain_steps}, seed=args.seed))
    atac, rna = _read(args.atac), _read(args.rna)
    craft = craft_train(atac, rna, model=args.model, recipe=recipe, out_dir=args.output, resume=args.resume,
                        overwrite=args.overwrite, genome=args.genome)
    print(f"trained CRAFT ({craft.config.rna.kind} RNA encoder, {craft.config.likelihood} imputation, "
          f"{len(craft.genes)} genes) for {args.steps} steps; saved to {args.output}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from ..tl.craft import craft_embed, load_craft

    _refuse_existing(Path(args.output), args.overwrite)
    adata = _read(args.input)
    craft_embed(adata, load_craft(args.craft), modality=args.modality)
    genes = adata.uns["X_craft"].get("genes")
    if genes is not None:
        print(f"{genes['n_shared']} of the model's {genes['n_genes']} genes found ({genes['n_missing']} set to 0)")
    _write(adata, args.output)
    return 0


def _impute(args: argparse.Namespace) -> int:
    from ..tl.craft import impute_rna, load_craft

    _refuse_existing(Path(args.output), args.overwrite)
    _write(impute_rna(_read(args.input), load_craft(args.craft)), args.output)
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from ..tl.craft import load_craft, transfer_labels

    _refuse_existing(Path(args.output), args.overwrite)
    query, reference = _read(args.query), _read(args.reference)
    transfer_labels(query, reference, load_craft(args.craft), labels_key=args.labels_key,
                    n_neighbors=args.n_neighbors, threshold=args.threshold)
    print(query.obs["craft_label"].value_counts().to_string())
    print(f"median confidence {query.obs['craft_confidence'].median():.3f}")
    _write(query, args.output)
    return 0
