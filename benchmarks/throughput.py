"""Forward+backward tokens/s of the atacFormer encoder, packed vs padded batches of the same cells.

Sentence lengths come from the shipped hemato peak matrix (peaks re-binned to hg19 5 kb bins by
midpoint) and from a simulated 2,000-cell fragments file (``../shared/bench/simulate_fragments.py``,
distinct 5 kb bins per barcode on hg38). For each preset and data set the same random batches are run
packed (flat stream, per-cell attention) and padded (B × L_max with a key-padding mask). Also: the
CPU attention backends on one packed batch, a full pretraining step (encoder + decoder with closed-bin
sampling + heads), and the parameter count of the ``base`` preset on hg38.

    python benchmarks/throughput.py            # ~15 min on a shared 2-core VM
    python benchmarks/throughput.py --quick    # fewer rounds (~10 min)
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/throughput.py --quick   # PyTorch's huge-page CPU allocations

The tiny preset also reports its step time with E1 frozen: E1's dense (V x k) gradient is allocated
and written by every backward whatever the layout, a fixed cost per batch (mostly page faults on the
fresh allocation; huge pages cut it) that bounds what packing can gain on short sentences.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from atacformer.genome import data_path, get_genome
from atacformer.models import Atacformer, AtacformerConfig, collate_cells, pad_batch
from atacformer.tokenize import BinVocab

REPO = Path(__file__).resolve().parents[1]
SIMULATOR = REPO / ".." / "shared" / "bench" / "simulate_fragments.py"


def hemato_cells() -> tuple[list[dict], BinVocab]:
    adata = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    vocab = BinVocab(get_genome("hg19"), 5000)
    ci = np.array([vocab.genome.chrom_index(c) if vocab.genome.chrom_index(c) is not None else -1
                   for c in adata.var["chrom"].astype(str)])
    mid = (adata.var["start"].to_numpy() + adata.var["end"].to_numpy()) // 2
    peak_bin = np.where(ci >= 0, vocab.bins.bin_ids(np.maximum(ci, 0), mid), -1)
    X = adata.X.tocsr()
    cells = []
    for i in range(adata.n_obs):
        b = peak_bin[X.indices[X.indptr[i]:X.indptr[i + 1]]]
        cells.append({"bin_ids": np.unique(b[b >= 0])})
    return cells, vocab


def simulated_cells(path: Path) -> tuple[list[dict], BinVocab]:
    if not path.exists():
        subprocess.run([sys.executable, str(SIMULATOR), "--cells", "2000", "--frags-per-cell", "4000",
                        "--out", str(path)], check=True)
    vocab = BinVocab(get_genome("hg38"), 5000)
    df = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1, 3], names=["chrom", "start", "barcode"])
    chroms = pd.Series({c: i for i, c in enumerate(vocab.genome.chroms)})
    df["ci"] = df["chrom"].map(chroms)
    df = df.dropna(subset=["ci"])
    df["bin"] = vocab.bins.bin_ids(df["ci"].to_numpy(np.int64), df["start"].to_numpy())
    return [{"bin_ids": g.unique()} for _, g in df.groupby("barcode")["bin"]], vocab


def encoder_step(model: Atacformer, batch) -> None:
    """Forward + backward through the encoder; the loss touches the <cls> and <eos> outputs."""
    h = model.encode(batch)
    loss = h[batch.cls_index].pow(2).mean() + h[batch.eos_index].pow(2).mean()
    loss.backward()


def full_step(model: Atacformer, batch) -> None:
    model(batch).loss.backward()


def tokens_per_s(model, batches, step) -> float:
    """Tokens per CPU-second of this process (``time.process_time``): on a shared VM wall time swings
    with other jobs' load, CPU time much less (run single-threaded, the default)."""
    tokens, t0 = 0, time.process_time()
    for b in batches:
        step(model, b)
        model.zero_grad(set_to_none=True)
        tokens += b.num_tokens
    return tokens / (time.process_time() - t0)


def interleaved(model, runs: dict, rounds: int) -> dict[str, float]:
    """Median tokens/s of each (batches, step) run, alternating runs round by round so that load from
    other processes on a shared machine hits all of them alike."""
    for batches, step in runs.values():  # warm-up
        step(model, batches[0])
        model.zero_grad(set_to_none=True)
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (batches, step) in runs.items():
            rates[name].append(tokens_per_s(model, batches, step))
    return {name: float(np.median(r)) for name, r in rates.items()}


def make_batches(cells, vocab, batch_size: int, n_batches: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        idx = rng.choice(len(cells), size=batch_size, replace=False)
        out.append(collate_cells([cells[i] for i in idx], vocab, rng=rng))
    return out


def compare_layouts(name, cells, vocab, presets, batch_size, n_batches, rounds):
    batches = make_batches(cells, vocab, batch_size, n_batches)
    lengths = np.array([len(c["bin_ids"]) for c in cells]) + 1 + vocab.n_chroms
    real = sum(b.num_tokens for b in batches)
    padded = [pad_batch(b) for b in batches]
    slots = sum(b.input_ids.numel() for b in padded)
    print(f"\n{name}: {len(cells)} cells, sentence length median {np.median(lengths):.0f} "
          f"(p5 {np.percentile(lengths, 5):.0f}, p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}, "
          f"capped at 5000); {n_batches} batches of {batch_size} cells = {real} tokens, padded {slots} slots "
          f"({slots / real:.2f}x)")
    for preset in presets:
        torch.manual_seed(0)
        model = Atacformer(AtacformerConfig.from_preset(preset, vocab, dropout=0.0)).train()
        r = interleaved(model, {"packed": (batches, encoder_step), "padded": (padded, encoder_step)}, rounds)
        print(f"  {preset:5s} encoder fwd+bwd: packed {r['packed']:9.0f} tok/s | padded {r['padded']:9.0f} tok/s | "
              f"packed/padded {r['packed'] / r['padded']:.2f}x")
        if preset == "tiny":
            e1_gradient_share(model, batches, padded, rounds)


def e1_gradient_share(model: Atacformer, batches, padded, rounds: int) -> None:
    """Diagnostic, not a target: the same steps with E1 frozen. Its dense (V x k) gradient is written in
    full by every backward whatever the batch layout, a fixed cost per batch that bounds the ratio."""
    tokens = float(np.mean([b.num_tokens for b in batches]))
    e1 = model.encoder.embed.e1.weight
    r = interleaved(model, {"packed": (batches, encoder_step), "padded": (padded, encoder_step)}, rounds)
    e1.requires_grad_(False)
    f = interleaved(model, {"packed": (batches, encoder_step), "padded": (padded, encoder_step)}, rounds)
    e1.requires_grad_(True)
    ms = {k: (tokens / r[k] * 1e3, tokens / f[k] * 1e3) for k in r}  # (with, without) ms per batch
    print(f"        ms/batch (E1 {tuple(e1.shape)} gradient on | frozen): packed {ms['packed'][0]:.1f} | "
          f"{ms['packed'][1]:.1f}, padded {ms['padded'][0]:.1f} | {ms['padded'][1]:.1f}; the E1 gradient costs "
          f"{ms['packed'][0] - ms['packed'][1]:.1f} / {ms['padded'][0] - ms['padded'][1]:.1f} ms per batch; "
          f"without it packed/padded {f['packed'] / f['padded']:.2f}x")


def forward_step(model: Atacformer, batch) -> None:
    with torch.no_grad():
        model.encode(batch)


def compare_backends(cells, vocab, batch_size: int, rounds: int):
    batches = make_batches(cells, vocab, batch_size, 1, seed=1)
    torch.manual_seed(0)
    model = Atacformer(AtacformerConfig.from_preset("small", vocab, dropout=0.0)).train()
    padded = [pad_batch(b) for b in batches]
    print(f"\nCPU attention backends, small preset, hemato, {batch_size} cells/batch (median tok/s):")
    for backend in ("buckets", "segments", "nested", "flex"):
        model.attention = backend
        runs = {"fwd": (batches, forward_step)}
        if backend != "flex":  # FlexAttention has no CPU backward
            runs["fwd+bwd"] = (batches, encoder_step)
        r = interleaved(model, runs, rounds)
        fb = f"{r['fwd+bwd']:9.0f}" if "fwd+bwd" in r else "  no CPU backward"
        print(f"  packed/{backend:9s} fwd+bwd {fb} | fwd only {r['fwd']:9.0f}")
    r = interleaved(model, {"fwd": (padded, forward_step), "fwd+bwd": (padded, encoder_step)}, rounds)
    print(f"  padded/sdpa-mask fwd+bwd {r['fwd+bwd']:9.0f} | fwd only {r['fwd']:9.0f}")


def full_steps(cells, vocab, batch_size: int, rounds: int):
    batches = make_batches(cells, vocab, batch_size, 2, seed=2)
    print(f"\nfull pretraining step (encoder + 3-state decoder over {vocab.n_bins} bins + heads), hemato, "
          f"{batch_size} cells/batch:")
    for rate in (0.01, None):
        torch.manual_seed(0)
        cfg = AtacformerConfig.from_preset("tiny", vocab, dropout=0.0, n_cell_types=10, state0_sample_rate=rate)
        model = Atacformer(cfg).train()
        r = interleaved(model, {"packed": (batches, full_step), "padded": ([pad_batch(b) for b in batches], full_step)},
                        rounds)
        label = f"closed bins sampled at {rate}" if rate else "all bins (exact)"
        print(f"  tiny, {label:28s}: packed {r['packed']:8.0f} tok/s | padded {r['padded']:8.0f} tok/s "
              f"({r['packed'] / r['padded']:.2f}x)")


def base_parameters():
    vocab = BinVocab(get_genome("hg38"), 5000)
    model = Atacformer(AtacformerConfig.from_preset("base", vocab))
    e1 = model.encoder.embed.e1.weight.numel()
    print(f"\nbase preset on hg38 ({len(vocab)} tokens): {model.num_parameters() / 1e6:.1f}M parameters, "
          f"of which E1 {e1 / 1e6:.1f}M ({len(vocab)} x {model.config.k}); "
          f"encoder layers {sum(p.numel() for p in model.encoder.layers.parameters()) / 1e6:.1f}M")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fragments", type=Path, default=Path("/tmp/atacformer_bench_sim_2000.tsv.gz"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device cpu; tok/s = tokens per CPU-second; "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')} "
          "(1: huge pages for large CPU tensors)")
    base_parameters()
    cells, vocab = hemato_cells()
    rounds = 3 if a.quick else 5
    compare_layouts("hemato (peaks -> hg19 5 kb bins)", cells, vocab, ("tiny", "small"), 32, 4, rounds)
    compare_backends(cells, vocab, 32, rounds)
    full_steps(cells, vocab, 16, rounds)
    sim, sim_vocab = simulated_cells(a.fragments)
    compare_layouts("simulated fragments (2,000 cells, hg38 5 kb bins)", sim, sim_vocab, ("tiny", "small"),
                    8, 1, 1 if a.quick else 2)


if __name__ == "__main__":
    main()
