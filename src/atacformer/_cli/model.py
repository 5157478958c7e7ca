"""``atacformer pretrain`` and ``atacformer embed``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _key_value(text: str) -> tuple[str, object]:
    """``key=value`` with a JSON value when it parses (numbers, lists, null), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(subparsers) -> None:
    _add_pretrain(subparsers)
    _add_embed(subparsers)


def _add_pretrain(subparsers) -> None:
    from ..tokenize.vocab import DECODERS
    from ..train import PretrainRecipe  # the CLI defaults are the recipe's

    r = PretrainRecipe()
    p = subparsers.add_parser(
        "pretrain", help="pretrain an atacFormer on corpus folders or a cells × bins .h5ad",
        description="Pretrain an atacFormer (masked-bin 3-state loss + contrastive <cls> views + label heads) with "
                    "the measured recipe (atacformer.train.PretrainRecipe). Writes the model (config.json, "
                    "model.safetensors, vocab.json), checkpoints/, logs/ and training_curve.png to -o.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="corpus folder(s) from `atacformer tokenize`, or one .h5ad")
    p.add_argument("-o", "--output", required=True, help="model directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model/run in the output folder")
    p.add_argument("--preset", default=r.preset, choices=["tiny", "small", "base"], help="architecture")
    p.add_argument("--set", dest="overrides", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set n_layers=4 --set state0_sample_rate=0.05")
    p.add_argument("--decoder", default=None, choices=list(DECODERS),
                   help="what the 3-state decoder reads: one <eos> per chromosome (default), per region class or per "
                        "chromosome × class, or learned cross-attention queries (per class with --region-classes)")
    p.add_argument("--region-classes", default=r.region_classes, metavar="FILE",
                   help="region classes of the bins: a BED / HOMER annotatePeaks / bin TSV file, or 'annotation' "
                        "(var['region_class'], else the genome's built-in gene annotation; "
                        "the class decoders' default)")
    p.add_argument("--contrastive-decoder-weight", type=float, default=None, metavar="W",
                   help="weight of the contrastive decoder (predicts the bins added to / dropped from each second "
                        "view; default 0 = off)")
    p.add_argument("--max-steps", type=int, default=r.trainer.max_steps, help="optimisation steps")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 1e-2 for tiny, else 3e-4)")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 5%% of max steps (at most 1000)")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="tokens per batch and rank (a token budget instead of a number of cells)")
    p.add_argument("--batch-size", type=int, default=None, help=f"cells per batch (default {r.data.batch_size})")
    p.add_argument("--batch-key", default=r.data.batch_key, metavar="COLUMN",
                   help="obs column of an .h5ad input naming samples/libraries: each training batch holds one of them; "
                        "'auto' = the first of obs batch/sample/library/donor with >= 2 values; 'none' = mix all")
    p.add_argument("--neighbor-scope", default=r.neighbor_scope, choices=["auto", "group", "all"],
                   help="where the contrastive views' neighbours are searched: within each --batch-key group, among "
                        "all cells, or 'auto' = within a group only if a kNN graph over all cells keeps it apart "
                        "(then batches hold one group only while some group stands apart)")
    p.add_argument("--accumulate", type=int, default=r.trainer.accumulate_grad_batches, help="gradient accumulation")
    p.add_argument("--grad-clip", type=float, default=r.trainer.gradient_clip_val, help="gradient norm clip")
    p.add_argument("--val", nargs="+", default=None, metavar="CORPUS", help="validation corpus folder(s)")
    p.add_argument("--val-fraction", type=float, default=r.data.val_fraction, help="held-out cells of an .h5ad input")
    p.add_argument("--val-every", type=int, default=None, metavar="N", help="validate every N steps")
    p.add_argument("--ckpt-every", type=int, default=r.trainer.ckpt_every_n_steps, metavar="N",
                   help="checkpoint every N steps")
    p.add_argument("--resume", default=None, help="'last' or a checkpoint path (of the same run)")
    p.add_argument("--devices", default="1", help="devices per node (a number or 'auto')")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes")
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"], help="distributed strategy")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"], help="device type")
    p.add_argument("--workers", type=int, default=r.data.num_workers, help="DataLoader workers per rank")
    p.add_argument("--log-every", type=int, default=r.trainer.log_every_n_steps, metavar="N", help="log every N steps")
    p.add_argument("--dna-table", default=None, metavar="PATH",
                   help="per-bin DNA embedding table from `atacformer dna-embed`, aligned to the vocabulary by bin "
                        "name and added to the token embedding (sets dna_dim; genome and bin size must match)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact repeats; slower)")
    p.add_argument("--seed", type=int, default=r.seed, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (periodic log lines instead)")
    p.set_defaults(func=_pretrain)


def _add_embed(subparsers) -> None:
    from ..tl.embed import REGION_SET_SUBSETS

    e = subparsers.add_parser("embed", help="cell (or region-set) embeddings from an atacFormer into obsm",
                              description="Embed the rows of a cells × bins (or region sets × bins) .h5ad and "
                                          "write it with obsm[KEY].")
    e.add_argument("model", help="model directory (from `atacformer pretrain` or `finetune`)")
    e.add_argument("cells", help="cells × bins (or region sets × bins) .h5ad on the model's genome and bin size")
    e.add_argument("-o", "--output", required=True, help="output .h5ad (written atomically)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output")
    e.add_argument("--key-added", default="X_atacformer", help="obsm key of the embedding (default: X_atacformer)")
    e.add_argument("--pooling", default="cls", choices=["cls", "mean"], help="<cls> output or mean over tokens")
    e.add_argument("--batch-size", type=int, default=64, help="cells per forward pass (default: 64)")
    e.add_argument("--n-subsets", type=int, default=None,
                   help="random subsets averaged per row longer than max_length (default: "
                        f"{REGION_SET_SUBSETS} for region sets from BED files, 1 for cells)")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: CUDA when available)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_embed)


def _input_vocab(inputs):
    """The vocabulary of the training inputs: an in-memory AnnData's ``uns``, or the first corpus's."""
    from ..tokenize import BinVocab, Corpus
    from ..tokenize.sources import bins_of

    if isinstance(inputs, list):
        return Corpus(inputs[0]).vocab()
    return BinVocab.from_bins(bins_of(inputs.uns, "training AnnData"))


def _dna_embeddings(path: str, inputs, overrides: dict):
    """(V, dim) float32 tensor of the table at ``path`` aligned to the inputs' vocabulary; sets
    ``overrides["dna_dim"]`` to the table width."""
    import torch

    from ..dna import DNAEmbeddingTable

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such DNA embedding table")
    table = DNAEmbeddingTable.load(path)
    if overrides.get("dna_dim", table.dim) != table.dim:
        raise ValueError(f"{path}: the DNA table has {table.dim} columns but --set dna_dim={overrides['dna_dim']}")
    overrides["dna_dim"] = table.dim
    return torch.from_numpy(table.aligned(_input_vocab(inputs)))  # genome / bin size checked by aligned()


def _recipe(args, overrides: dict):
    """The PretrainRecipe of the command line (defaults = the recipe's)."""
    from ..train import PretrainRecipe

    r = PretrainRecipe(preset=args.preset, seed=args.seed, region_classes=args.region_classes,
                       neighbor_scope=args.neighbor_scope)
    flags = {k: v for k, v in (("decoder", args.decoder),
                               ("contrastive_decoder_weight", args.contrastive_decoder_weight))
             if v is not None}
    return r.replace(
        model={**r.model, **flags, **overrides},
        optimizer={"lr": args.lr, "warmup_steps": args.warmup_steps},
        trainer={"max_steps": args.max_steps, "ckpt_every_n_steps": args.ckpt_every,
                 "val_every_n_steps": args.val_every,
                 "log_every_n_steps": args.log_every, "gradient_clip_val": args.grad_clip,
                 "accumulate_grad_batches": args.accumulate, "progress_bar": False if args.no_progress else None,
                 "deterministic": args.deterministic},
        data={**_batching(args, r), "batch_key": None if args.batch_key == "none" else args.batch_key,
              "val_fraction": args.val_fraction, "num_workers": args.workers})


def _batching(args, r) -> dict:
    """Cells per batch (the recipe's unless given), or a token budget with ``--batch-tokens``."""
    if args.batch_tokens is not None and args.batch_size is not None:
        raise SystemExit("give --batch-size or --batch-tokens, not both")
    if args.batch_tokens is not None:
        return {"batch_size": None, "max_tokens": args.batch_tokens}
    return {"batch_size": args.batch_size or r.data.batch_size, "max_tokens": r.data.max_tokens}


def _pretrain(args) -> int:
    from ..io import read_h5ad
    from ..train import pretrain

    inputs = args.inputs[0] if len(args.inputs) == 1 and args.inputs[0].endswith(".h5ad") else args.inputs
    overrides, dna = dict(args.overrides), None
    if args.dna_table:
        if isinstance(inputs, str):  # read once: the vocabulary for the table, then the training cells
            inputs = read_h5ad(inputs)
        dna = _dna_embeddings(args.dna_table, inputs, overrides)
    trainer_kwargs = {"devices": int(args.devices) if args.devices.isdigit() else args.devices,
                      "num_nodes": args.num_nodes, "strategy": args.strategy, "accelerator": args.accelerator}
    pretrain(inputs, out_dir=args.output, recipe=_recipe(args, overrides), val_inputs=args.val, dna_embeddings=dna,
             resume=args.resume, overwrite=args.overwrite, trainer_kwargs=trainer_kwargs)
    return 0


def _embed(args) -> int:
    from ..io import read_h5ad, write_h5ad
    from ..tl.embed import embed
    from .common import check_output

    out = check_output(args.output, args.overwrite)
    adata = read_h5ad(args.cells)
    embed(adata, args.model, key_added=args.key_added, pooling=args.pooling, batch_size=args.batch_size,
          device=args.device, n_subsets=args.n_subsets, progress=False if args.no_progress else None)
    write_h5ad(adata, out)
    return 0
