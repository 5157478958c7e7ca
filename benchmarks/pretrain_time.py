"""Time `atacformer pretrain` per 1,000 cells on CPU, for the README's "No pretrained checkpoint ships".

Synthetic hg38 cells shaped like 10x scATAC in 5 kb bins: each cell opens a log-normal number of bins
(median 3,000, at most 5,000 used per sentence) drawn from a 150,000-bin accessible pool, a third of
them from its cell type's own 20,000 bins. The command's in-memory defaults are used (observed-bin
decoder, SVD-initialised E1, contrastive views from spectral neighbours), with 32-cell batches.
Two runs (SHORT and LONG steps) separate start-up (SVD, neighbours, model set-up) from the per-step
cost. Prints wall and CPU seconds.

    python benchmarks/pretrain_time.py [--cells 1000] [--short 5] [--long 25]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from atacformer.cli import main
from atacformer.genome import get_genome


def synthetic_cells(n_cells: int, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    bins = get_genome("hg38").bins(5000)
    pool = rng.choice(bins.n_bins, 150_000, replace=False)
    types = rng.integers(0, 5, n_cells)
    own = [rng.choice(pool, 20_000, replace=False) for _ in range(5)]
    rows, cols = [], []
    for i in range(n_cells):
        n = int(min(rng.lognormal(np.log(3000), 0.5), 12_000))
        picks = np.concatenate([rng.choice(own[types[i]], n // 3), rng.choice(pool, n - n // 3)])
        picks = np.unique(picks)
        rows.append(np.full(len(picks), i))
        cols.append(picks)
    r, c = np.concatenate(rows), np.concatenate(cols)
    X = sp.csr_matrix((np.ones(len(r), np.int32), (r, c)), shape=(n_cells, bins.n_bins))
    obs = pd.DataFrame({"cell_type": pd.Categorical(types.astype(str))}, index=[f"c{i}" for i in range(n_cells)])
    return ad.AnnData(X=X, obs=obs, var=bins.var(), uns=bins.uns())


def timed_run(path: Path, out: Path, steps: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    rc = main(["pretrain", str(path), "--max-steps", str(steps), "--batch-size", "32", "--accelerator", "cpu",
               "--ckpt-every", "100000", "--no-progress", "-o", str(out)])
    assert rc in (0, None), rc
    return time.perf_counter() - t, time.process_time() - c


def run(n_cells: int, short: int, long: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.h5ad"
        adata = synthetic_cells(n_cells)
        adata.write_h5ad(path)
        n_open = np.diff(adata.X.indptr)
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
              f"load {os.getloadavg()[0]:.1f}; {n_cells} hg38 cells, median open bins {int(np.median(n_open))}")
        w1, c1 = timed_run(path, Path(tmp) / "m_short", short)
        w2, c2 = timed_run(path, Path(tmp) / "m_long", long)
    step_w, step_c = (w2 - w1) / (long - short), (c2 - c1) / (long - short)
    start_w, start_c = w1 - short * step_w, c1 - short * step_c
    print(f"start-up ({n_cells} cells): {start_w:.1f} s wall, {start_c:.1f} CPU-s")
    print(f"per 32-cell step: {step_w:.2f} s wall, {step_c:.2f} CPU-s")
    per_k = 1000 / 32
    print(f"per 1,000 cells seen: {per_k * step_w:.0f} s wall, {per_k * step_c:.0f} CPU-s; "
          f"400 x 32-cell steps: {400 * step_w / 60:.1f} min wall")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--short", type=int, default=5)
    p.add_argument("--long", type=int, default=25)
    a = p.parse_args()
    run(a.cells, a.short, a.long)
