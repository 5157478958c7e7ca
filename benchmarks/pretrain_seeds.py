"""Joint pretraining on two datasets, and batch correction, across pretraining seeds (issue 5).

For each seed the demo's model (``DemoSettings``: tiny preset, 400 steps, labels withheld) is pretrained on
PBSmall + hemato twice — batches drawn from one dataset at a time (``batch_key="dataset"``, the demo's
default) and mixed batches (``batch_key=None``) — and each model's <cls> embedding is clustered and scored
on both datasets beside the spectral baseline. The grouped model is then integrated across the two hemato
donors: uncorrected, adversarial fine-tune only, and with the final MNN correction (``integrate``'s default).

    python benchmarks/pretrain_seeds.py [--seeds 0,1,2] [--out DIR] [--no-mixed]

About 1.5 min of pretraining per model and 30 s of integration per seed on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from atacformer.demo import REFERENCE_DONOR, DemoSettings, load_data, pretrain_model
from atacformer.tl import embed, evaluate, integrate, spectral

CLUSTER = ["ARI", "NMI", "kNN_acc"]
BATCH = ["iLISI", "batch_ASW", "celltype_ASW", "ARI"]


def _row(table, cols) -> str:
    return " ".join(f"{c} {table[c]:.3f}" for c in cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="/tmp/atacformer_pretrain_seeds")
    ap.add_argument("--no-mixed", action="store_true", help="only the grouped (batch_key='dataset') models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pbs, hem = load_data()
    for a in (pbs, hem):
        spectral(a, seed=0)
    for name, a in (("PBSmall", pbs), ("hemato", hem)):
        t = evaluate(a, reps={"spectral": "X_spectral"}, labels_key="cell_type", seed=0)
        print(f"{name:8s} spectral           {_row(t.loc['spectral'], CLUSTER)}", flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for batch_key in ("dataset",) if args.no_mixed else ("dataset", None):
            s = dataclasses.replace(DemoSettings(seed=seed), batch_key=batch_key)
            t0 = time.perf_counter()
            model, _ = pretrain_model(pbs, hem, Path(args.out) / f"seed{seed}_{batch_key or 'mixed'}", s)
            label = f"seed {seed} {'one dataset per batch' if batch_key else 'mixed batches'}"
            for name, a in (("PBSmall", pbs), ("hemato", hem)):
                embed(a, model, key_added="X_atacformer", progress=False)
                t = evaluate(a, reps={"atacformer": "X_atacformer"}, labels_key="cell_type", seed=0)
                print(f"{name:8s} {label:32s} {_row(t.loc['atacformer'], CLUSTER)} "
                      f"(pretrain {time.perf_counter() - t0:.0f} s)", flush=True)
            if batch_key is None:
                continue
            integrate(hem, model, batch_key="donor", epochs=s.integrate_epochs, batch_size=s.batch_size,
                      state0_sample_rate=s.state0_sample_rate, seed=seed, key_added="X_int")
            reps = {"uncorrected": "X_atacformer", "adversarial only": "X_int_model", "adversarial + MNN": "X_int"}
            t = evaluate(hem, reps=reps, labels_key="cell_type", batch_key="donor", reference_batch=REFERENCE_DONOR,
                         seed=0)
            for rep in reps:
                print(f"hemato   seed {seed} integration {rep:18s} {_row(t.loc[rep], BATCH)}", flush=True)


if __name__ == "__main__":
    main()
