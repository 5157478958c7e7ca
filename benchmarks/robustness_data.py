"""Synthetic inputs and small helpers for ``benchmarks/robustness.py`` (see there)."""

from __future__ import annotations

import contextlib
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.genome import get_genome

BIN = "100000"  # large bins keep every case fast; the checks do not depend on the bin size


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str = "error"  # "error" or "ok"
    names: tuple[str, ...] = ()  # substrings an error message must hold (default: the first input)
    check: object = None  # fn(stderr) -> bool for "ok" cases
    setup: object = None  # fn() run right before the case (may return a context manager)
    outputs: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ data
def near_tss_rows(genome: str, n_cells: int = 20, per_cell: int = 300, seed: int = 0) -> list[tuple]:
    """Fragments of ``n_cells`` barcodes, 60 % near a TSS of ``genome`` (so the build check can tell)."""
    rng = np.random.default_rng(seed)
    genes = get_genome(genome).genes()
    genes = genes[genes["chrom"].isin([f"chr{i}" for i in range(1, 20)])].reset_index(drop=True)
    rows = []
    for _c in range(n_cells):
        bc = "".join(rng.choice(list("ACGT"), 16)) + "-1"
        pick = genes.iloc[rng.integers(0, len(genes), per_cell)]
        near = rng.random(per_cell) < 0.6
        start = np.where(near, pick["tss"].to_numpy() + rng.integers(-400, 400, per_cell),
                         rng.integers(1_000_000, 50_000_000, per_cell))
        length = rng.integers(60, 600, per_cell)
        for ch, s, n in zip(pick["chrom"], start, length, strict=False):
            rows.append((ch, int(max(s, 0)), int(max(s, 0) + n), bc, int(rng.integers(1, 4))))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def write_rows(path: Path, rows, *, header: str = "# synthetic\n", eol: str = "\n", cols: int = 5) -> Path:
    text = header + "".join("\t".join(map(str, r[:cols])) + eol for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    return path


def matrix(path: Path, genome: str, *, n_cells: int = 30, n_peaks: int = 400, dtype=np.int32, seed: int = 1,
           values=None) -> Path:
    """A cells × peaks h5ad with var chrom/start/end, peaks near TSSs of ``genome``."""
    rng = np.random.default_rng(seed)
    genes = get_genome(genome).genes()
    genes = genes[genes["chrom"].isin([f"chr{i}" for i in range(1, 20)])]
    pick = genes.sample(n_peaks, random_state=seed)
    var = pd.DataFrame({"chrom": pick["chrom"].to_numpy(), "start": pick["tss"].to_numpy() - 250,
                        "end": pick["tss"].to_numpy() + 250})
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end, strict=False)]
    X = sp.random(n_cells, n_peaks, density=0.2, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.integers(1, 5, k)).astype(dtype)
    if values is not None:
        X.data[:] = values
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]), var=var)
    a.write_h5ad(path)
    return path


# ------------------------------------------------------------------------------------------------ running
def read(path: Path) -> ad.AnnData:
    return ad.read_h5ad(path)


_N_OUT = iter(range(10**6))


def ingest(inputs, out: Path, *extra: str) -> list[str]:
    if out.name == "x.h5ad":  # an output that should never be written: a fresh name per case
        out = out.with_name(f"x{next(_N_OUT)}.h5ad")
    return ["ingest", *map(str, inputs), "-o", str(out), "--bin-size", BIN, "--min-fragments", "10", *extra]


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _bed(path: Path, rows) -> Path:
    path.write_text("".join(f"{c}\t{s}\t{e}\tpeak{i}\n" for i, (c, s, e, *_) in enumerate(rows)))
    return path


def _mtx(folder: Path, src: ad.AnnData) -> Path:
    import scipy.io

    folder.mkdir()
    scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.csr_matrix(src.X).T.tocoo())
    (folder / "barcodes.tsv").write_text("\n".join(src.obs_names) + "\n")
    (folder / "peaks.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in
                                              zip(src.var.chrom, src.var.start, src.var.end, strict=False)))
    return folder


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def _fifo(path: Path, data: bytes):
    import threading

    if path.exists():
        path.unlink()
    os.mkfifo(path)

    def feed():
        with open(path, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        yield
    finally:
        t.join(timeout=5)
        path.unlink(missing_ok=True)


