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

from atacformer.metrics import macro_f1
from atacformer.models import Atacformer
from atacformer.tl import annotate, finetune, map_query
from atacformer.tl.demo import QUERY_DONOR, REFERENCE_DONOR, DemoSettings, load_data, pretrain_model

TABLE = {"train_embeddings": True, "embedding_lr": 1e-2}
RECIPES: dict[str, tuple[dict, dict]] = {  # name: (finetune options, annotate options)
    "head, defaults (demo)": ({}, {}),
    "+ class-balanced loss": ({"class_weight": "balanced"}, {}),
    "+ depth augmentation keep 0.5-1": ({"keep": (0.5, 1.0)}, {}),
    "+ body lr 1e-4 (head 1e-3)": ({"body_lr": 1e-4}, {}),
    "+ bin table trained (lr 1e-2)": (TABLE, {}),
    "+ bin table, dropout 0.2": ({**TABLE, "dropout": 0.2}, {}),
    "+ bin table, kNN mix 0.5": (TABLE, {"knn_weight": 0.5}),
    "+ bin table, balanced, kNN mix 0.5": ({**TABLE, "class_weight": "balanced"}, {"knn_weight": 0.5}),
}


def _model(path: Path) -> Atacformer:
    if not (path / "config.json").exists():
        pbs, hem = load_data()
        model, _ = pretrain_model(pbs, hem, path.parent / f"{path.name}_run", DemoSettings())
        model.save_pretrained(path)
    return Atacformer.from_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="annot_model", help="pretrained model folder (created if missing)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--recipes", help="comma-separated recipe names (default: all)")
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
    for name, (ft, an) in recipes.items():
        scores, t = [], time.perf_counter()
        for seed in seeds:
            tuned, r = copy.deepcopy(base), ref.copy()
            finetune(r, tuned, labels_key="cell_type", seed=seed, **ft)
            annotate(query, tuned, threshold=0.0, reference=r if an else None, **an)
            scores.append(macro_f1(truth, query.obs["atacformer_label"]))
        rows.append((name, scores, (time.perf_counter() - t) / len(seeds)))
        print(f"{name}: {' '.join(f'{s:.3f}' for s in scores)}", flush=True)
    print(f"\n| recipe | {' | '.join(f'seed {s}' for s in seeds)} | mean | s per run |")
    print(f"|---|{'---|' * len(seeds)}---|---|")
    for name, scores, secs in rows:
        print(f"| {name} | {' | '.join(f'{s:.3f}' for s in scores)} | {np.mean(scores):.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
