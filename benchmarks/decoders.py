"""Decoder ablation (issue 16): per-chromosome <eos> (today), region-class <eos>, class × chromosome <eos>,
cross-attention queries per chromosome and per class — each with and without the contrastive decoder.

Same data, same steps, same seeds: the demo recipe (``PretrainRecipe.demo``: tiny preset, 32 cells per
batch, contrastive views with spectral neighbours, observed-bin decoder, SVD-initialised E1) with
``batch_key=None`` and ``--steps`` steps, on

* hemato — the shipped 600 cells (hg19 10x peaks re-binned to 5 kb bins), labels ``cell_type``;
* SNARE-seq — the 6,968 ATAC cells of /work/shared/data/snareseq_mouse_cortex_mm10 (mm10, 5 kb bins),
  labels ``cell_type_coarse``.

Per run: clustering ARI/NMI (Leiden bisected to the label count), leave-one-out kNN label accuracy (k 15)
of the <cls> embedding; removed-vs-closed AUROC of the decoder (log-odds state 2 vs 0, 15 % of each
cell's bins removed, content-seeded, over the decoder's bins) on ``--auroc-cells`` cells, overall and
per built-in region class; median training step time; peak RSS of the run's process. Every run is its
own subprocess (``--jobs`` at a time, one thread each); finished runs are kept in ``OUT/runs.jsonl``,
so an interrupted benchmark continues where it stopped.

    python benchmarks/decoders.py [--steps 300] [--seeds 0,1] [--jobs 2] [--out DIR] [--decoders A,B]
                                  [--cd-weights 0,1] [--datasets hemato,snare]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

SNARE = Path("/work/shared/data/snareseq_mouse_cortex_mm10/atac.h5ad")
DATASETS = {"hemato": "cell_type", "snare": "cell_type_coarse"}
# name: (decoder, recipe.region_classes)
DECODERS = {
    "chromosome <eos>": ("chromosome", None),
    "region-class <eos>": ("region-class", None),
    "class × chromosome <eos>": ("class-x-chromosome", None),
    "cross-attention / chromosome": ("cross-attention", None),
    "cross-attention / class": ("cross-attention", "annotation"),
}
CONTRASTIVE_DECODER_WEIGHT = 1.0


def prepare(out: Path) -> dict[str, Path]:
    """Both datasets as cells × 5 kb bins .h5ad files in ``out`` (written once)."""
    from atacformer.genome import data_path
    from atacformer.io import read_region_matrix

    paths = {"hemato": out / "hemato.h5ad", "snare": out / "snare.h5ad"}
    sources = {"hemato": (data_path("hemato_10x_hg19.h5ad"), "hg19"), "snare": (SNARE, "mm10")}
    for name, path in paths.items():
        if not path.exists():
            src, genome = sources[name]
            read_region_matrix(src, genome=genome, bin_size=5000).write_h5ad(path)
    return paths


class StepTimer(Callback):
    """Lightning callback: wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.times, self._t = [], 0.0

    def on_train_batch_start(self, *args):
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter() - self._t)


def removed_auroc(model, adata, *, n_cells: int, seed: int = 0) -> dict[str, float]:
    """Removed-vs-closed AUROC over the decoder's bins, overall and per built-in region class."""
    from sklearn.metrics import roc_auc_score

    from atacformer.models import collate_cells
    from atacformer.pp import region_classes
    from atacformer.train.batcher import adata_cells, cell_rng

    model.eval()
    table = region_classes(model.vocab.genome, model.vocab.bin_size)
    cells = adata_cells(adata, model)
    pick = np.sort(np.random.default_rng(seed).choice(len(cells), size=min(n_cells, len(cells)), replace=False))
    bins = model.state_decoder.bins.cpu().numpy()  # (n,) sorted global ids
    scores, removed, cls = [], [], []
    for start in range(0, len(pick), 32):
        chunk = [cells[i] for i in pick[start: start + 32]]
        batch = collate_cells(chunk, model.vocab, mask_fraction=0.15, rng=[cell_rng(c["bin_ids"], seed) for c in chunk])
        logits = model.bin_state_logits(batch, bins).float().numpy()  # (B, n, 3)
        y = np.zeros((len(chunk), len(bins)), dtype=np.int64)
        col = np.searchsorted(bins, batch.target_bin.numpy())
        ok = (col < len(bins)) & (bins[np.minimum(col, len(bins) - 1)] == batch.target_bin.numpy())
        y[batch.target_cell.numpy()[ok], col[ok]] = batch.target_state.numpy()[ok]
        keep = y != 1
        scores.append((logits[..., 2] - logits[..., 0])[keep])
        removed.append((y == 2)[keep])
        cls.append(np.broadcast_to(table.cat.codes.to_numpy()[bins], y.shape)[keep])
    s, r, c = (np.concatenate(a) for a in (scores, removed, cls))
    out = {"all": float(roc_auc_score(r, s))}
    for code, name in enumerate(table.cat.categories):
        sel = c == code
        if r[sel].any() and (~r[sel]).any():
            out[str(name)] = float(roc_auc_score(r[sel], s[sel]))
    return out


def child(spec: dict) -> dict:
    """One run: pretrain, embed, score (runs in its own process)."""
    import anndata as ad
    import torch

    from atacformer.tl import embed, evaluate
    from atacformer.train import PretrainRecipe, pretrain

    torch.set_num_threads(1)
    adata = ad.read_h5ad(spec["path"])
    decoder, classes = DECODERS[spec["decoder"]]
    r = PretrainRecipe.demo(seed=spec["seed"])
    recipe = r.replace(data={"batch_key": None}, trainer={"max_steps": spec["steps"], "log_every_n_steps": 50},
                       model={**r.model, "decoder": decoder, "contrastive_decoder_weight": spec["cd_weight"]},
                       region_classes=classes)
    timer = StepTimer()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # without label columns: pretraining trains a head on any cell_type column it finds (not wanted here)
        unlabelled = ad.AnnData(adata.X, obs=adata.obs.drop(columns=[c for c in ("cell_type", "cell_type_coarse")
                                                                     if c in adata.obs]), var=adata.var, uns=adata.uns)
        model = pretrain(unlabelled, out_dir=tmp, recipe=recipe, callbacks=[timer],
                         trainer_kwargs={"accelerator": "cpu"})
    train_s = time.perf_counter() - t0
    model.eval()
    embed(adata, model, key_added="X_af", progress=False)
    table = evaluate(adata, reps={"atacformer": "X_af"}, labels_key=spec["labels_key"], seed=0).loc["atacformer"]
    return {**spec, "ARI": float(table["ARI"]), "NMI": float(table["NMI"]), "kNN_acc": float(table["kNN_acc"]),
            "auroc": removed_auroc(model, adata, n_cells=spec["auroc_cells"]),
            "step_ms": 1000 * float(np.median(timer.times[10:])), "train_s": train_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_regions": model.vocab.n_regions, "n_eos": model.vocab.n_eos}


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"run {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarise(rows: list[dict]) -> str:
    """Markdown: per configuration the mean over seeds (and each seed's value) of every figure."""
    keys = [(d, w) for d in DECODERS for w in (0.0, CONTRASTIVE_DECODER_WEIGHT)]
    head = ("| decoder | contr. dec. | hemato ARI | NMI | kNN | AUROC | SNARE ARI | NMI | kNN | AUROC | "
            "step ms (h / s) | peak MB (h / s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for d, w in keys:
        cells = [d, "on" if w else "off"]
        for ds in DATASETS:
            sel = [r for r in rows if r["decoder"] == d and r["cd_weight"] == w and r["dataset"] == ds]
            for metric in ("ARI", "NMI", "kNN_acc", "auroc"):
                vals = [r[metric]["all"] if metric == "auroc" else r[metric] for r in sel]
                cells.append(f"{np.mean(vals):.3f} ({' / '.join(f'{v:.3f}' for v in vals)})" if vals else "–")
        for metric in ("step_ms", "peak_rss_mb"):
            vals = [np.mean([r[metric] for r in rows if r["decoder"] == d and r["cd_weight"] == w
                             and r["dataset"] == ds] or [np.nan]) for ds in DATASETS]
            cells.append(" / ".join(f"{v:.0f}" for v in vals))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise_classes(rows: list[dict]) -> str:
    """Markdown: removed-vs-closed AUROC per region class (mean over seeds), without the contrastive decoder."""
    out = []
    for ds in DATASETS:
        sel = [r for r in rows if r["dataset"] == ds and r["cd_weight"] == 0.0]
        if not sel:
            continue
        classes = [k for k in sel[0]["auroc"] if k != "all"]
        out += [f"{ds}:", "", "| decoder | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
        for d in DECODERS:
            rs = [r for r in sel if r["decoder"] == d]
            vals = [np.mean([r["auroc"].get(k, np.nan) for r in rs]) for k in classes]
            out.append(f"| {d} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--auroc-cells", type=int, default=300)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--decoders", default=",".join(DECODERS), help="subset of the decoder names (comma-separated)")
    ap.add_argument("--cd-weights", default=f"0,{CONTRASTIVE_DECODER_WEIGHT:g}",
                    help="contrastive-decoder weights to run (0 = off)")
    ap.add_argument("--out", default="/tmp/atacformer_decoders")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = prepare(out)
    done_file = out / "runs.jsonl"
    rows = [json.loads(ln) for ln in done_file.read_text().splitlines()] if done_file.exists() else []
    done = {(r["dataset"], r["decoder"], r["cd_weight"], r["seed"]) for r in rows}
    specs = [{"dataset": ds, "path": str(paths[ds]), "labels_key": DATASETS[ds], "decoder": d, "cd_weight": w,
              "seed": int(seed), "steps": args.steps, "auroc_cells": args.auroc_cells}
             for seed in args.seeds.split(",") for ds in args.datasets.split(",") for d in args.decoders.split(",")
             for w in map(float, args.cd_weights.split(",")) if (ds, d, w, int(seed)) not in done]
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {len(specs)} runs to do", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(run_child, specs):
            rows.append(row)
            with done_file.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{row['dataset']:6s} seed {row['seed']} {row['decoder']:28s} cd {row['cd_weight']:.0f}: "
                  f"ARI {row['ARI']:.3f} NMI {row['NMI']:.3f} kNN {row['kNN_acc']:.3f} "
                  f"AUROC {row['auroc']['all']:.3f} step {row['step_ms']:.0f} ms peak {row['peak_rss_mb']:.0f} MB "
                  f"({row['train_s']:.0f} s)", flush=True)
    print(summarise(rows))
    print()
    print(summarise_classes(rows))


if __name__ == "__main__":
    main()
