"""Benchmark `atacformer ingest` on simulated 10x fragments against SnapATAC2 and the `zcat | wc -l` floor.

    python benchmarks/ingest.py [--workdir /tmp/atacformer-bench-ingest] [--repeat 3] [--skip-5x]

Inputs come from ../shared/bench/simulate_fragments.py (seed 0): the reference file (--cells 2000
--frags-per-cell 4000, 9.07M fragments) and a 5x larger one (--cells 10000, same depth: atlases grow by
cells) for the peak-RSS flatness check. Every tool runs as a subprocess; wall time, CPU time (user + sys of
the child and all its threads: a steadier figure than wall time on a shared machine) and peak RSS (ru_maxrss
of that child) are measured, best of --repeat runs. Counts are checked against an independent brute-force
count (pandas C parser, own binning from the chrom-sizes file, np.unique aggregation).
Targets: >= 4x faster than SnapATAC2, <= 2x the zcat floor, peak RSS <= 600 MB, RSS flat (+-10%) at 5x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIMULATOR = REPO / ".." / "shared" / "bench" / "simulate_fragments.py"
CHROM_SIZES = REPO / "src" / "atacformer" / "data" / "reference" / "chrom_sizes" / "hg38.chrom.sizes"
MAIN = [f"chr{i}" for i in range(1, 23)] + ["chrX"]

_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}))
"""

_SNAPATAC2 = """
import sys, snapatac2 as snap
sizes = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[2]) if l.split()[0] in set(sys.argv[4].split(","))}
a = snap.pp.import_fragments(sys.argv[1], chrom_sizes=sizes, file=sys.argv[3], min_num_fragments=100,
                             sorted_by_barcode=False)
snap.pp.add_tile_matrix(a, bin_size=5000)
print("snapatac2", a.shape)
a.close()
"""


def measure(cmd: list[str], repeat: int) -> dict:
    """Best-of-``repeat`` wall time, CPU time (user + sys, all threads) and peak RSS of ``cmd`` run as a child."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if res["rc"] != 0:
            raise RuntimeError(f"{cmd} failed: {out.stderr[-2000:]}")
        runs.append(res)
    return {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
            "rss_mb": max(r["rss_mb"] for r in runs), "walls": [round(r["wall"], 2) for r in runs]}


def simulate(path: Path, cells: int, frags_per_cell: int) -> Path:
    if not path.exists():
        print(f"simulating {path.name} ({cells} cells x {frags_per_cell} fragments)...", flush=True)
        subprocess.run([sys.executable, str(SIMULATOR), "--cells", str(cells), "--frags-per-cell",
                        str(frags_per_cell), "--out", str(path)], check=True)
    return path


def brute_force_check(frags: Path, h5ad: Path) -> tuple[bool, int]:
    """Independent count of insertions per (barcode, 5 kb bin) compared with the ingested matrix."""
    import anndata as ad
    import pandas as pd

    sizes = {line.split()[0]: int(line.split()[1]) for line in open(CHROM_SIZES)}
    n_bins = {c: -(-sizes[c] // 5000) for c in MAIN}
    offset = dict(zip(MAIN, np.concatenate([[0], np.cumsum([n_bins[c] for c in MAIN])[:-1]]).tolist(), strict=False))
    total = sum(n_bins.values())
    adata = ad.read_h5ad(h5ad)
    cell_of = {b: i for i, b in enumerate(adata.obs_names)}
    keys = []
    for df in pd.read_csv(frags, sep="\t", header=None, comment="#", chunksize=2_000_000,
                          names=["chrom", "start", "end", "barcode", "count"], engine="c"):
        df = df[df["chrom"].isin(offset) & df["barcode"].isin(cell_of)]
        off = df["chrom"].map(offset).to_numpy(np.int64)
        cell = df["barcode"].map(cell_of).to_numpy(np.int64)
        for pos in (df["start"].to_numpy(np.int64), df["end"].to_numpy(np.int64) - 1):
            keys.append(cell * total + off + pos // 5000)
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    coo = adata.X.tocoo()
    ours = coo.row.astype(np.int64) * total + coo.col
    order = np.argsort(ours)
    same = np.array_equal(ours[order], uniq) and np.array_equal(coo.data[order], counts)
    return bool(same), int(uniq.size)


def snapatac2_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import snapatac2"], capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/atacformer-bench-ingest")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-5x", action="store_true")
    ap.add_argument("--skip-check", action="store_true", help="skip the brute-force count check")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    f1 = simulate(work / "frags_1x.tsv.gz", 2000, 4000)
    f5 = None if args.skip_5x else simulate(work / "frags_5x.tsv.gz", 10000, 4000)
    print(f"load average before timing: {os.getloadavg()}", flush=True)

    def ingest_cmd(frags: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "atacformer", "ingest", str(frags), "--genome", "hg38", "-o", str(out)]

    res = {"zcat": measure(["bash", "-c", f"zcat {f1} | wc -l"], args.repeat)}
    res["atacformer"] = measure(ingest_cmd(f1, work / "cells_1x.h5ad"), args.repeat)
    if snapatac2_available():
        res["snapatac2"] = measure([sys.executable, "-c", _SNAPATAC2, str(f1), str(CHROM_SIZES),
                                    str(work / "snap_1x.h5ad"), ",".join(MAIN)], max(1, args.repeat - 1))
    else:
        print("snapatac2 is not installed (import snapatac2 failed): skipping it")
    if f5 is not None:
        res["atacformer_5x"] = measure(ingest_cmd(f5, work / "cells_5x.h5ad"), 1)
    print(f"load average after timing: {os.getloadavg()}")

    print("\n| run | wall s (best) | all runs | CPU s (best) | peak RSS MB |\n|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['wall']:.2f} | {r['walls']} | {r['cpu']:.2f} | {r['rss_mb']:.0f} |")
    a = res["atacformer"]
    print(f"\natacformer / zcat floor: {a['wall'] / res['zcat']['wall']:.2f}x wall (target <= 2), "
          f"{a['cpu'] / res['zcat']['cpu']:.2f}x CPU time")
    if "snapatac2" in res:
        print(f"snapatac2 / atacformer: {res['snapatac2']['wall'] / a['wall']:.2f}x (target >= 4)")
    print(f"peak RSS: {a['rss_mb']:.0f} MB (target <= 600)")
    if "atacformer_5x" in res:
        print(f"peak RSS 5x / 1x: {res['atacformer_5x']['rss_mb'] / a['rss_mb']:.3f} (target 0.9-1.1)")
    if not args.skip_check:
        t = time.perf_counter()
        same, n = brute_force_check(f1, work / "cells_1x.h5ad")
        print(f"brute-force count check: {'EQUAL' if same else 'DIFFERENT'} ({n} non-zero entries, "
              f"{time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
