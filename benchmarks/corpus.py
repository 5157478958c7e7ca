"""Benchmark: `write_corpus` throughput and peak memory (flat in input size), and `CorpusDataset` read speed.

Makes synthetic cells × bins h5ad files on hg38 5 kb bins (written in chunks with h5py, so this script
never holds a whole matrix either), then, each in a fresh subprocess:
  * tokenize N and 4N cells → cells/s, open bins/s, peak RSS (must stay flat: the writer streams);
  * stream the 4N corpus with CorpusDataset (shuffled), DataLoader batches of 64 cells (collate_fn=list,
    i.e. without the model's collator), num_workers 0 and 2 → cells/s.

    python benchmarks/corpus.py [--cells 10000] [--open-bins 2000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata.io import write_elem

from atacformer.genome import get_genome

WRITE = """
import json, resource, sys, time
from atacformer.tokenize import write_corpus
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
info = write_corpus([sys.argv[1]], sys.argv[2], progress=False, cells_per_shard=20480)
print(json.dumps({"seconds": time.perf_counter() - t, "cells": info.n_cells, "shards": len(info.shards),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "import_rss_mb": base}))
"""

READ = """
import json, resource, sys, time
from torch.utils.data import DataLoader
from atacformer.tokenize import CorpusDataset
ds = CorpusDataset(sys.argv[1], shuffle=True, seed=0)
loader = DataLoader(ds, batch_size=64, num_workers=int(sys.argv[2]), collate_fn=list)
t = time.perf_counter()
n = nnz = 0
for batch in loader:
    n += len(batch)
    nnz += sum(len(cell["bin_ids"]) for cell in batch)
print(json.dumps({"seconds": time.perf_counter() - t, "cells": n, "nnz": nnz,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_h5ad(path: Path, n_cells: int, open_bins: int, *, chunk: int = 2000, seed: int = 0) -> int:
    """A cells × bins h5ad (CSR int32 counts, ingest-style var/uns/obs) with ~open_bins per cell."""
    bins = get_genome("hg38").bins(5000)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice([f"type{i}" for i in range(12)], n_cells)),
                            "batch": pd.Categorical(rng.choice(["b1", "b2", "b3"], n_cells))},
                           index=[f"cell{i}" for i in range(n_cells)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", bins.var())
        write_elem(f, "uns", bins.uns())
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, bins.n_bins)})
        data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indptr = [0]
        for start in range(0, n_cells, chunk):
            n = min(chunk, n_cells - start)
            lengths = rng.poisson(open_bins, n)
            idx = np.concatenate([np.sort(rng.choice(bins.n_bins, k, replace=False)) for k in lengths])
            end = data.shape[0] + len(idx)
            data.resize((end,))
            indices.resize((end,))
            data[-len(idx):] = rng.integers(1, 5, len(idx), dtype=np.int32)
            indices[-len(idx):] = idx.astype(np.int32)
            indptr.extend((indptr[-1] + np.cumsum(lengths)).tolist())
        g.create_dataset("indptr", data=np.asarray(indptr, dtype=np.int64))
        for name in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, name, {})
        return int(indptr[-1])


def run(script: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def du(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--open-bins", type=int, default=2000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="atacformer-bench-corpus-", dir=Path(__file__).parent))
    try:
        rows = []
        for scale in (1, 4):
            n = args.cells * scale
            h5ad = tmp / f"cells{n}.h5ad"
            t = time.perf_counter()
            nnz = make_h5ad(h5ad, n, args.open_bins, seed=scale)
            made = time.perf_counter() - t
            w = run(WRITE, h5ad, tmp / f"corpus{n}")
            rows.append((n, nnz, w))
            print(f"write {n:>7} cells ({nnz / 1e6:.1f}M open bins, h5ad {du(h5ad):.0f} MB, made in {made:.0f}s): "
                  f"{w['seconds']:.1f}s = {n / w['seconds']:,.0f} cells/s, {nnz / w['seconds'] / 1e6:.1f}M bins/s, "
                  f"{w['shards']} shards, corpus {du(tmp / f'corpus{n}'):.0f} MB, peak RSS {w['peak_rss_mb']:.0f} MB "
                  f"({w['import_rss_mb']:.0f} MB after imports)")
            if scale == 1:
                h5ad.unlink()
        (n1, _, w1), (n4, _, w4) = rows
        print(f"peak RSS ratio 4x input / 1x input: {w4['peak_rss_mb'] / w1['peak_rss_mb']:.2f}")
        for workers in (0, 2):
            r = run(READ, tmp / f"corpus{n4}", workers)
            assert r["cells"] == n4, r
            print(f"read  {n4} cells, DataLoader num_workers={workers}: {r['seconds']:.1f}s = "
                  f"{r['cells'] / r['seconds']:,.0f} cells/s ({r['nnz'] / r['seconds'] / 1e6:.1f}M bins/s), "
                  f"main-process peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"max RSS of all children: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
