"""CRAFT evaluation protocol on the shipped SNARE-seq cortex (paired RNA + ATAC, mm10), split by library.

Train on some sequencing libraries, evaluate on the cells of libraries never seen in training
(protocol and baselines: :mod:`atacformer.tl.craft_eval`):

- alignment (ATAC↔RNA of the same held-out cells): FOSCTTM (random = 0.5) and top-1/top-10 retrieval of the
  true partner, both directions;
- imputation of log-normalised RNA from ATAC: mean per-gene and per-cell Pearson on the held-out cells;
- label transfer RNA reference (training libraries) → ATAC query (held-out libraries): accuracy and
  macro-F1 on coarse and fine cell types.

Baselines (all fitted on the training libraries only): CCA between ATAC LSI and RNA PCA; gene-activity
scores (gene body ± 2 kb, on the shipped peaks) in the RNA PCA; kNN imputation (15 nearest training cells
in ATAC LSI); ridge from ATAC TF-IDF to RNA. ATAC enters as 5 kb mm10 bins, as everywhere else.

CRAFT: the ATAC encoder is pretrained once (tiny preset, training libraries only), then each variant
(RNA encoder × imputation likelihood) is trained from it with the default recipe otherwise.

    python benchmarks/craft.py [--test-libraries 09G,09H] [--variants mlp-nb,tokens-nb] [-o OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import anndata as ad
import torch

from atacformer._snareseq import snareseq
from atacformer.metrics import to_markdown
from atacformer.tl.craft_eval import PairedSplit, Tables, baselines, train_and_score
from atacformer.train import pretrain
from atacformer.train.craft import CraftRecipe

#: CRAFT variants measured against each other: changes of the recipe's model (RNA encoder, likelihood)
VARIANTS = {
    "mlp-nb": {},
    "tokens-nb": {"rna": {"kind": "tokens", "d_model": 64, "d_ff": 128, "n_heads": 4, "max_genes": 128}},
    "mlp-poisson": {"likelihood": "poisson"},
    "mlp-mse": {"likelihood": "mse"},
}


def pretrain_encoder(s: PairedSplit, *, steps: int, out_dir: Path, seed: int = 0):
    """The ATAC encoder every CRAFT variant starts from: the recipe's on-the-fly pretraining (tiny preset)
    on the training libraries' ATAC cells only (no labels), one library per batch."""
    recipe = CraftRecipe().pretrain.replace(trainer={"max_steps": steps, "log_every_n_steps": 25,
                                                     "progress_bar": False},
                                            data={"batch_key": "batch", "batch_size": 32}, seed=seed)
    atac = s.atac[s.train]  # without its label columns: pretraining would train a cell_type head on them
    atac = ad.AnnData(atac.X, obs=atac.obs[["batch"]].copy(), var=atac.var, uns=dict(atac.uns))
    return pretrain(atac, out_dir=out_dir, recipe=recipe, overwrite=True)


def best_step(run: Path) -> int | None:
    """The training step whose weights CRAFT kept (its best validation check), if it validated."""
    path = run / "best" / "best.ckpt"
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"]) if path.exists() else None


def run_craft(s: PairedSplit, tables: Tables, variants: list[str], *, steps: int | None, pretrain_steps: int,
              seed: int = 0) -> None:
    """Pretrain the ATAC encoder once, then train and score each CRAFT variant from it."""
    seconds = tables.info.setdefault("seconds", {})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        encoder = pretrain_encoder(s, steps=pretrain_steps, out_dir=Path(tmp) / "pretrain", seed=seed)
        seconds["pretrain"] = round(time.perf_counter() - t, 1)
        for name in variants:
            recipe = CraftRecipe(seed=seed).replace(model=VARIANTS[name],
                                                    trainer={"progress_bar": False, "ckpt_every_n_steps": None})
            if steps is not None:
                recipe = recipe.replace(trainer={"max_steps": steps})
            t = time.perf_counter()
            _, rows, _ = train_and_score(s, model=encoder, recipe=recipe, out_dir=Path(tmp) / name,
                                         method=f"CRAFT ({name})")
            seconds[name] = round(time.perf_counter() - t, 1)
            tables.info.setdefault("best_step", {})[name] = best_step(Path(tmp) / name)
            tables.extend(rows)
            a, (head, knn), lab = rows.alignment[0], rows.imputation, rows.labels[0]
            print(f"{name}: {seconds[name]} s (weights of step {tables.info['best_step'][name]})  "
                  f"FOSCTTM {a['FOSCTTM']:.3f}  per-gene r head {head['per-gene r']:.3f} "
                  f"joint kNN {knn['per-gene r']:.3f}  macro-F1 coarse {lab['coarse macro-F1']:.3f} "
                  f"fine {lab['fine macro-F1']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-libraries", default="09G,09H", help="held-out libraries (comma-separated)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"CRAFT variants ({', '.join(VARIANTS)}; "
                                                                      "'' = baselines only)")
    parser.add_argument("--steps", type=int, help="CRAFT training steps (default: the recipe's)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="ATAC encoder pretraining steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="also write the tables as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    t0 = time.perf_counter()
    atac, rna = snareseq()
    regions, _ = snareseq(bin_size=None)
    s = PairedSplit.by_library(atac, rna, test=args.test_libraries.split(","), regions=regions)
    tables = baselines(s)
    tables.info.setdefault("seconds", {})["baselines"] = round(time.perf_counter() - t0, 1)
    variants = [v for v in args.variants.split(",") if v]
    if variants:
        run_craft(s, tables, variants, steps=args.steps, pretrain_steps=args.pretrain_steps, seed=args.seed)
    libs = ", ".join(sorted(atac.obs["batch"][s.train].unique()))
    print(f"SNARE-seq cortex: {int(s.train.sum())} training cells ({libs}), {int(s.test.sum())} held-out cells "
          f"({args.test_libraries}); {rna.n_vars} genes; {tables.info}")
    titles = {"alignment": "Alignment (held-out libraries; FOSCTTM lower is better, random 0.5)",
              "imputation": "RNA imputation from ATAC (held-out libraries, log-normalised)",
              "labels": "Label transfer RNA reference → ATAC query"}
    for name, frame in tables.frames().items():
        print(f"\n### {titles[name]}\n")
        print(to_markdown(frame))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"alignment": tables.alignment, "imputation": tables.imputation, "labels": tables.labels,
                       "info": tables.info}, fh, indent=1)


if __name__ == "__main__":
    main()
