"""Training-stack overhead: tokens/s of ``atacformer.train.pretrain`` (Lightning: logging of every
loss part and state metric, per-step seeding, checkpoint callback) vs. a bare PyTorch loop
(collate → forward → backward → AdamW) over the same packed batches.

Data: the shipped hemato peak matrix (600 cells) re-binned to 5 kb bins of hg19 chr1–chr2 by peak
midpoint; tiny preset, 4,096-token batches, closed-bin sampling 0.02. Run: ``python benchmarks/train_throughput.py``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from atacformer.genome import Genome, data_path, get_genome
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.train import AtacformerDataModule, pretrain

TOKENS, STEPS = 4096, 40
OVERRIDES = dict(dropout=0.0, state0_sample_rate=0.02)


def hemato(chroms=("chr1", "chr2")) -> ad.AnnData:
    peaks = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    genome = Genome.from_chrom_sizes(get_genome("hg19").chrom_sizes, name="hg19", chroms=list(chroms))
    bins = genome.bins(5000)
    ci = np.array([-1 if genome.chrom_index(c) is None else genome.chrom_index(c)
                   for c in peaks.var["chrom"].astype(str)])
    keep = ci >= 0
    mid = (peaks.var["start"].to_numpy() + peaks.var["end"].to_numpy()) // 2
    onehot = sp.csr_matrix((np.ones(keep.sum()), (np.flatnonzero(keep), bins.bin_ids(ci[keep], mid[keep]))),
                           shape=(peaks.n_vars, bins.n_bins))
    return ad.AnnData(X=sp.csr_matrix(peaks.X) @ onehot, obs=pd.DataFrame(peaks.obs[["cell_type"]]),
                      var=bins.var(), uns=bins.uns())


def bare_loop(adata: ad.AnnData, steps: int) -> tuple[float, int]:
    dm = AtacformerDataModule(adata, max_tokens_per_batch=TOKENS, val_fraction=0.0)
    dm.setup("fit")
    config = AtacformerConfig.from_preset("tiny", dm.vocab, n_cell_types=6, **OVERRIDES)
    model = Atacformer(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(dm.train_dataloader())
    next(it)  # warm-up
    tokens, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = next(it)
        loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += batch.num_tokens
    return time.perf_counter() - t0, time.process_time() - c0, tokens


def lightning_time(adata: ad.AnnData, steps: int, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    pretrain(adata, out_dir=out, max_steps=steps, max_tokens_per_batch=TOKENS, val_fraction=0.0, lr=1e-3,
             overrides=OVERRIDES, ckpt_every_n_steps=10_000, log_every_n_steps=1, progress_bar=False)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    adata = hemato()
    bare_s, bare_cpu, tokens = bare_loop(adata, STEPS)
    with tempfile.TemporaryDirectory() as tmp:
        short, short_cpu = lightning_time(adata, 5, Path(tmp) / "a")
        long, long_cpu = lightning_time(adata, 5 + STEPS, Path(tmp) / "b")
    # per step: the difference of a short and a long run, so start-up (Trainer, first batch) cancels out
    wall, cpu = (long - short) / STEPS, (long_cpu - short_cpu) / STEPS
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {STEPS} steps of <={TOKENS} tokens "
          f"(mean {tokens / STEPS:.0f} tokens, tiny preset, hemato chr1-2)")
    print(f"bare loop  : {bare_s / STEPS * 1e3:7.1f} ms/step wall, {bare_cpu / STEPS * 1e3:7.1f} ms CPU  "
          f"{tokens / bare_s:7.0f} tokens/s")
    print(f"pretrain() : {wall * 1e3:7.1f} ms/step wall, {cpu * 1e3:7.1f} ms CPU  "
          f"{tokens / STEPS / wall:7.0f} tokens/s")
    print(f"overhead of the training stack: {100 * (cpu / (bare_cpu / STEPS) - 1):+.0f}% CPU time per step, "
          f"{100 * (wall / (bare_s / STEPS) - 1):+.0f}% wall; pretrain start-up {short - 5 * wall:.1f} s")

if __name__ == "__main__":
    sys.exit(main())
