"""Cell-type annotation on a held-out donor (issue 5): fine-tune on hemato BMMC_D6T1 (492 cells), predict
BMMC_D5T1 (108 cells), macro-F1 per fine-tuning recipe and seed (query labels are used only for scoring).

The pretrained model is the demo's (``DemoSettings``: tiny preset, contrastive objective, labels
withheld); it is pretrained once into ``--model`` unless that folder already holds one.

    python benchmarks/annotation_heldout.py [--model DIR] [--seeds 0,1] [--recipes NAME,...]
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from atacformer.demo import (
    QUERY_DONOR,
    REFERENCE_DONOR,
    DemoSettings,
    load_data,
    pretrain_model,
)
from atacformer.metrics import macro_f1
from atacformer.models import Atacformer
from atacformer.tl import annotate, finetune, map_query

OLD = {"class_weight": None, "keep": None}  # finetune's defaults before this issue
TABLE = {**OLD, "train_embeddings": True, "embedding_lr": 1e-2}
BEST = {**TABLE, "class_weight": "balanced", "monitor": "macro_f1", "patience": 15}
BAL = {**OLD, "class_weight": "balanced"}
RECIPES: dict[str, tuple[str, dict, dict]] = {  # key: (description, finetune options, annotate options)
    "default": ("head, previous defaults (no class weights, no depth augmentation)", OLD, {}),
    "balanced": ("class-balanced loss", BAL, {}),
    "keep": ("depth augmentation, keep 50-100 % of bins", {**OLD, "keep": (0.5, 1.0)}, {}),
    "body_lr": ("encoder lr 1e-4, head 1e-3", {**OLD, "body_lr": 1e-4}, {}),
    "state": ("masked-bin loss kept (weight 1)", {**OLD, "state_loss_weight": 1.0}, {}),
    "table": ("bin table trained (lr 1e-2, no decay)", TABLE, {}),
    "table_dropout": ("bin table, dropout 0.2", {**TABLE, "dropout": 0.2}, {}),
    "table_knn": ("bin table, kNN mix 0.5", TABLE, {"knn_weight": 0.5}),
    "f1": ("balanced, early stop on val macro-F1 (patience 15)", {**BAL, "monitor": "macro_f1", "patience": 15}, {}),
    "best_head": ("bin table, balanced, stop on val macro-F1", BEST, {}),
    "best": ("bin table, balanced, stop on val macro-F1, kNN mix 0.5", BEST, {"knn_weight": 0.5}),
    "balanced_knn": ("balanced, kNN mix 0.5", BAL, {"knn_weight": 0.5}),
    "balanced_body": ("balanced, encoder lr 1e-4", {**BAL, "body_lr": 1e-4}, {}),
    "balanced_keep": ("new defaults: balanced, keep 50-100 % of bins", {}, {}),
    "balanced_dropout": ("balanced, dropout 0.1", {**BAL, "dropout": 0.1}, {}),
    "balanced_keep_state": ("balanced, keep 50-100 %, masked-bin loss kept", {"state_loss_weight": 1.0}, {}),
}


def _model(path: Path) -> Atacformer:
    if not (path / "config.json").exists():
        print(f"pretraining the demo model into {path}/ (a few minutes) …", flush=True)
        pbs, hem = load_data()
        model, _ = pretrain_model(pbs, hem, path.parent / f"{path.name}_run", DemoSettings())
        model.save_pretrained(path)
    return Atacformer.from_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="annot_model", help="pretrained model folder (created if missing)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--recipes", help=f"comma-separated keys of {', '.join(RECIPES)} (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = RECIPES if not args.recipes else {k: RECIPES[k] for k in args.recipes.split(",")}
    base = _model(Path(args.model))
    _, hem = load_data()
    ref, query = hem[hem.obs["donor"] == REFERENCE_DONOR].copy(), hem[hem.obs["donor"] == QUERY_DONOR].copy()
    truth = query.obs["cell_type"]

    rows = [("15-NN on the pretrained <cls> (map_query)",
             [macro_f1(truth, map_query(query, ref, base, k=15).obs["atacformer_mapped"])] * len(seeds), 0.0)]
    for key, (name, ft, an) in recipes.items():
        scores, t = [], time.perf_counter()
        for seed in seeds:
            tuned, r = copy.deepcopy(base), ref.copy()
            finetune(r, tuned, labels_key="cell_type", seed=seed, **ft)
            annotate(query, tuned, threshold=0.0, reference=r if an else None, **an)
            scores.append(macro_f1(truth, query.obs["atacformer_label"]))
        rows.append((name, scores, (time.perf_counter() - t) / len(seeds)))
        print(f"{key} ({name}): {' '.join(f'{s:.3f}' for s in scores)}", flush=True)
    print(f"\n| recipe | {' | '.join(f'seed {s}' for s in seeds)} | mean | s per run |")
    print(f"|---|{'---|' * len(seeds)}---|---|")
    for name, scores, secs in rows:
        print(f"| {name} | {' | '.join(f'{s:.3f}' for s in scores)} | {np.mean(scores):.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
