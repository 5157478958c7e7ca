"""Bad-input corpus through the ``atacformer`` CLI: every case is classified as

- **clear error**: exit 2 with a one-line message naming the offending file (or option);
- **unclear error**: exit 2 but the message does not name it;
- **traceback**: an exception escaped ``atacformer.cli.main``;
- **silent wrong output**: exit 0 where an error was due, or an output that fails the case's check;
- **ok**: a valid (or repairable) input ingested correctly;
- **leftovers**: temporary files or spill folders left behind (counted separately, after every case).

Run: ``python benchmarks/robustness.py`` (about two minutes on 2 cores; nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from atacformer.cli import main  # noqa: E402
from atacformer.genome import get_genome  # noqa: E402

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
    for c in range(n_cells):
        bc = "".join(rng.choice(list("ACGT"), 16)) + "-1"
        pick = genes.iloc[rng.integers(0, len(genes), per_cell)]
        near = rng.random(per_cell) < 0.6
        start = np.where(near, pick["tss"].to_numpy() + rng.integers(-400, 400, per_cell),
                         rng.integers(1_000_000, 50_000_000, per_cell))
        length = rng.integers(60, 600, per_cell)
        for ch, s, n in zip(pick["chrom"], start, length):
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
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end)]
    X = sp.random(n_cells, n_peaks, density=0.2, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.integers(1, 5, k)).astype(dtype)
    if values is not None:
        X.data[:] = values
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]), var=var)
    a.write_h5ad(path)
    return path


# ------------------------------------------------------------------------------------------------ running
def leftovers(folders: list[Path]) -> list[Path]:
    out = []
    for d in folders:
        if d.is_dir():
            out += [p for p in d.rglob(".*") if p.name.endswith((".tmp", ".old", ".h5ad")) or ".tmp" in p.name]
            out += [p for p in d.glob("atacformer-*")]
    return out


def run_case(case: Case, folders: list[Path]) -> tuple[str, str, int]:
    err, out = io.StringIO(), io.StringIO()
    before = set(leftovers(folders))
    ctx = case.setup() if case.setup else None
    log = logging.StreamHandler(err)  # the CLI's own handler is bound to the first case's stream
    logging.getLogger().addHandler(log)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), (ctx or contextlib.nullcontext()):
            rc = main(case.argv)
    except BaseException:  # noqa: BLE001 - a traceback is what this benchmark counts
        return "traceback", traceback.format_exc(limit=3), len(set(leftovers(folders)) - before)
    finally:
        logging.getLogger().removeHandler(log)
    text = err.getvalue()
    n_left = len(set(leftovers(folders)) - before)
    if case.expect == "error":
        if rc == 0:
            return "silent wrong output", "exit 0 where an error was due", n_left
        names = case.names or (Path(next(a for a in case.argv[1:] if not a.startswith("-"))).name,)
        clear = rc == 2 and all(n in text for n in names) and "Traceback" not in text
        if case.check and not case.check(text):
            return "silent wrong output", "the case's check failed after the error", n_left
        last = text.strip().splitlines()[-1][:160] if text.strip() else f"exit {rc}, no message"
        return ("clear error" if clear else "unclear error"), last, n_left
    if rc != 0:
        return "unexpected error", text.strip()[-200:], n_left
    ok = case.check(text) if case.check else True
    return ("ok" if ok else "silent wrong output"), text.strip()[-160:], n_left


def read(path: Path) -> ad.AnnData:
    return ad.read_h5ad(path)


_N_OUT = iter(range(10**6))


def ingest(inputs, out: Path, *extra: str) -> list[str]:
    if out.name == "x.h5ad":  # an output that should never be written: a fresh name per case
        out = out.with_name(f"x{next(_N_OUT)}.h5ad")
    return ["ingest", *map(str, inputs), "-o", str(out), "--bin-size", BIN, "--min-fragments", "10", *extra]


def fragment_cases(d: Path) -> list[Case]:
    rows = near_tss_rows("hg38")
    good = write_rows(d / "good_fragments.tsv.gz", rows)
    cells = write_rows(d / "cells.tsv.gz", rows, cols=4)  # a 4-column fragments file named like anything
    hg19 = write_rows(d / "hg19_fragments.tsv.gz", near_tss_rows("hg19", seed=2))
    rng = np.random.default_rng(3)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    o = d / "out"
    o.mkdir()
    n_cells = len({r[3] for r in rows})

    def n_obs_is(path, n, **obs):
        def check(_text):
            a = read(path)
            return a.n_obs == n and all(np.all(a.obs[k].to_numpy() == v) for k, v in obs.items())
        return check

    def bad_line(name, line, **kw):
        r = list(rows)
        r.insert(5, line)
        return write_rows(d / name, r, **kw)

    cases = [
        Case("valid fragments", ingest([good], o / "good.h5ad"), "ok", check=n_obs_is(o / "good.h5ad", n_cells)),
        Case("4-column fragments named cells.tsv.gz", ingest([cells], o / "cells.h5ad"), "ok",
             check=n_obs_is(o / "cells.h5ad", n_cells)),
        Case("file concatenated with itself", ingest([write_rows(d / "twice_fragments.tsv.gz", rows + rows)],
                                                      o / "twice.h5ad")),
        Case("unsorted file with every line twice",
             ingest([write_rows(d / "twice2_fragments.tsv", shuffled + shuffled[::-1])], o / "twice2.h5ad")),
        Case("duplicates with --allow-duplicate-lines",
             ingest([d / "twice_fragments.tsv.gz"], o / "twice3.h5ad", "--allow-duplicate-lines"), "ok",
             check=lambda t: "exact copies" in t and read(o / "twice3.h5ad").n_obs == n_cells),
        Case("hg19 fragments with --genome hg38", ingest([hg19], o / "b1.h5ad", "--genome", "hg38"),
             names=("hg19_fragments", "'hg19'")),
        Case("hg19 fragments with --genome mm10", ingest([hg19], o / "b2.h5ad", "--genome", "mm10"),
             names=("hg19_fragments", "'hg19'")),
        Case("hg19 fragments on hg38 with --force-genome",
             ingest([hg19], o / "b3.h5ad", "--genome", "hg38", "--force-genome"), "ok",
             check=lambda t: "wrong genome build" in t and (o / "b3.h5ad").exists()),
        Case("fragments past chromosome ends", ingest([write_rows(d / "past_fragments.tsv", [
            (c, s + 248_000_000 if c == "chr1" else s, e + 248_000_000 if c == "chr1" else e, b, n)
            for c, s, e, b, n in rows])], o / "past.h5ad")),
        Case("empty barcode field", ingest([bad_line("nobc_fragments.tsv", ("chr1", 100, 200, "", 1))], o / "x.h5ad"),
             names=("nobc_fragments.tsv", "line 7")),
        Case("trailing spaces after barcodes", ingest([write_rows(d / "spaces_fragments.tsv", [
            (c, s, e, b + (" " if i % 3 == 0 else ""), n) for i, (c, s, e, b, n) in enumerate(rows)])],
            o / "spaces.h5ad"), "ok", check=n_obs_is(o / "spaces.h5ad", n_cells)),
        Case("NUL byte in a barcode", ingest([bad_line("nul_fragments.tsv", ("chr1", 100, 200, "AC\0GT", 1))],
                                              o / "x.h5ad"), names=("nul_fragments.tsv", "line 7")),
        Case("huge count value", ingest([bad_line("huge_fragments.tsv", ("chr1", 100, 200, "ACGT", 2**40))],
                                         o / "x.h5ad"), names=("huge_fragments.tsv", "line 7")),
        Case("count 0", ingest([bad_line("zero_fragments.tsv", ("chr1", 100, 200, "ACGT", 0))], o / "x.h5ad"),
             names=("zero_fragments.tsv", "line 7")),
        Case("negative start", ingest([bad_line("neg_fragments.tsv", ("chr1", -5, 200, "ACGT", 1))], o / "x.h5ad"),
             names=("neg_fragments.tsv", "line 7")),
        Case("start after end", ingest([bad_line("rev_fragments.tsv", ("chr1", 500, 200, "ACGT", 1))], o / "x.h5ad"),
             names=("rev_fragments.tsv", "line 7")),
        Case("text in start column", ingest([bad_line("txt_fragments.tsv", ("chr1", "1e5", 200, "ACGT", 1))],
                                             o / "x.h5ad"), names=("txt_fragments.tsv", "line 7")),
        Case("3-column line among 5", ingest([bad_line("cols_fragments.tsv", ("chr1", 100, 200))], o / "x.h5ad"),
             names=("cols_fragments.tsv", "line 7")),
        Case("position beyond int64", ingest([bad_line("big_fragments.tsv", ("chr1", 10**19, 10**19 + 5, "A", 1))],
                                              o / "x.h5ad"), names=("big_fragments.tsv", "line 7")),
        Case("empty file", ingest([write_rows(d / "empty_fragments.tsv", [], header="")], o / "x.h5ad")),
        Case("header-only file", ingest([write_rows(d / "hdr_fragments.tsv.gz", [])], o / "x.h5ad")),
        Case("truncated gzip", ingest([_truncated(good, d / "cut_fragments.tsv.gz")], o / "x.h5ad")),
        Case("barcode not UTF-8", ingest([_raw(d / "latin_fragments.tsv", b"chr1\t100\t200\tAC\xe9GT\t1\n" * 50)],
                                          o / "x.h5ad")),
        Case("contigs match no chromosome", ingest([write_rows(d / "ncbi_fragments.tsv", [
            ("NC_0000" + c[3:], s, e, b, n) for c, s, e, b, n in rows])], o / "x.h5ad")),
        Case("Ensembl chromosome names", ingest([write_rows(d / "ens_fragments.tsv", [
            (c[3:], s, e, b, n) for c, s, e, b, n in rows])], o / "ens.h5ad"), "ok",
            check=n_obs_is(o / "ens.h5ad", n_cells)),
        Case("CRLF line ends", ingest([write_rows(d / "crlf_fragments.tsv", rows, eol="\r\n")], o / "crlf.h5ad"),
             "ok", check=n_obs_is(o / "crlf.h5ad", n_cells)),
        Case("fragments and a BED file mixed", ingest([good, _bed(d / "peaks.bed", rows[:200])], o / "x.h5ad"),
             names=("good_fragments", "peaks.bed")),
        Case("--input-type fragments on a BED file",
             ingest([d / "peaks.bed"], o / "x.h5ad", "--input-type", "fragments"), names=("peaks.bed",)),
        Case("min-fragments leaves no cell", ingest([good], o / "none.h5ad", "--min-fragments", "1000000"),
             names=("good_fragments", "no cells")),
        Case("missing input", ingest([d / "nope_fragments.tsv"], o / "x.h5ad")),
        Case("input is an empty folder", ingest([_mkdir(d / "emptydir")], o / "x.h5ad")),
        Case("bin size 1", ingest([good], o / "x.h5ad") + ["--bin-size", "1"], names=("bin-size 1",)),
        Case("bin size 0", ingest([good], o / "x.h5ad") + ["--bin-size", "0"], names=("bin_size",)),
        Case("unknown genome", ingest([good], o / "x.h5ad", "--genome", "hg37"), names=("hg37",)),
        Case("corrupt chrom sizes file", ingest([good], o / "x.h5ad", "--genome",
                                                str(_raw(d / "bad.sizes", b"chr1\tlots\n"))), names=("bad.sizes",)),
    ]
    return cases + table_cases(d, rows, good, o, n_obs_is)


def table_cases(d: Path, rows, good: Path, o: Path, n_obs_is) -> list[Case]:
    barcodes = sorted({r[3] for r in rows})
    noheader = d / "labels_noheader.tsv"
    noheader.write_text("".join(f"{b}\tT{i % 3}\n" for i, b in enumerate(barcodes)))
    dup = d / "labels_dup.tsv"
    dup.write_text("barcode\tcell_type\n" + "".join(f"{b}\tT\n" for b in barcodes + barcodes[:1]))
    nomatch = d / "labels_nomatch.tsv"
    nomatch.write_text("barcode\tcell_type\nZZZ\tT\n")
    spaced = d / "labels_spaced.tsv"
    spaced.write_text("barcode\tcell_type\n" + "".join(f"{b} \tT\n" for b in barcodes))
    wl = _raw(d / "whitelist_empty.txt", b"\n")
    s1, s2 = write_rows(d / "a#1_fragments.tsv", rows), write_rows(d / "b#2_fragments.tsv", rows[::2])
    both = d / "labels_both.tsv"
    both.write_text("barcode\tcell_type\n" + "".join(f"{b}\tT\n" for b in barcodes))
    n = len(barcodes)

    def sample_check(_text):
        a = read(o / "hash.h5ad")
        return a.n_obs == 2 * n and set(a.obs["barcode"]) == set(barcodes)

    return [
        Case("labels table without header", ingest([good], o / "nh.h5ad", "--labels", str(noheader)), "ok",
             check=lambda t: n_obs_is(o / "nh.h5ad", n)(t) and "label" in read(o / "nh.h5ad").obs),
        Case("labels with a duplicate row", ingest([good], o / "x.h5ad", "--labels", str(dup)), names=("labels_dup",)),
        Case("labels match no barcode", ingest([good], o / "x.h5ad", "--labels", str(nomatch)),
             names=("good_fragments", "labels")),
        Case("labels with trailing spaces", ingest([good], o / "sp.h5ad", "--labels", str(spaced)), "ok",
             check=n_obs_is(o / "sp.h5ad", n)),
        Case("empty whitelist", ingest([good], o / "x.h5ad", "--whitelist", str(wl)), names=("whitelist_empty",)),
        Case("'#' in sample names, with labels", ingest([s1, s2], o / "hash.h5ad", "--labels", str(both)), "ok",
             check=sample_check),
        Case("same file name twice: samples named by folder", ingest([good, _copy(good, _mkdir(d / "other") / good.name)],
                                                                      o / "two.h5ad"), "ok",
             check=lambda t: set(read(o / "two.h5ad").obs["sample"]) == {"data", "other"}),
        Case("same sample name twice", ingest([good, good], o / "x.h5ad", "--sample-names", "s,s"),
             names=("duplicate sample names",)),
        Case("--sample-names count mismatch", ingest([good], o / "x.h5ad", "--sample-names", "a,b"),
             names=("sample names",)),
    ]


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


def region_cases(d: Path) -> list[Case]:
    o = d / "out_regions"
    o.mkdir()
    good = matrix(d / "peaks.h5ad", "hg38")
    src = read(good)
    big = matrix(d / "big_counts.h5ad", "hg38", dtype=np.int64, values=2**31 - 10)
    zero = ad.AnnData(X=sp.csr_matrix((0, src.n_vars), dtype=np.int32), var=src.var)
    zero.write_h5ad(d / "zero_cells.h5ad")
    text_var = src.copy()
    text_var.var["start"] = text_var.var["start"].astype(str)
    text_var.var.iloc[3, text_var.var.columns.get_loc("start")] = "12,5OO"
    text_var.write_h5ad(d / "text_start.h5ad")
    past = src.copy()
    past.var.iloc[0, past.var.columns.get_loc("start")] = 300_000_000
    past.var.iloc[0, past.var.columns.get_loc("end")] = 300_000_500
    past.write_h5ad(d / "one_past_end.h5ad")
    neg, frac = src.copy(), src.copy()
    neg.X = neg.X.copy()
    neg.X.data[0] = -1
    neg.write_h5ad(d / "negative.h5ad")
    frac.X = frac.X.astype(np.float32)
    frac.X.data[0] = 0.5
    frac.write_h5ad(d / "fraction.h5ad")
    nocoord = src.copy()
    nocoord.var = pd.DataFrame(index=[f"peak{i}" for i in range(src.n_vars)])
    nocoord.write_h5ad(d / "no_coords.h5ad")
    hg19 = matrix(d / "hg19_peaks.h5ad", "hg19", n_peaks=600, seed=4)
    mtx = _mtx(d / "mtx", src)
    bad_mtx = _mtx(d / "mtx_bad", src)
    (bad_mtx / "barcodes.tsv").write_text("only_one\n")

    def total(path, expected):
        return lambda _t: int(read(path).X.sum()) == expected and read(path).X.data.min() > 0

    bed = d / "regions.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\tp{i}\n" for i, (c, s, e) in
                           enumerate(zip(src.var.chrom, src.var.start, src.var.end))))
    hg19_bed = d / "hg19.narrowPeak"
    v = read(hg19).var
    hg19_bed.write_text("".join(f"{c}\t{s}\t{e}\tp{i}\t0\t.\t1\t1\t1\t250\n" for i, (c, s, e) in
                                enumerate(zip(v.chrom, v.start, v.end))))
    return [
        Case("valid peak matrix", ingest([good], o / "m.h5ad"), "ok", check=total(o / "m.h5ad", int(src.X.sum()))),
        Case("h5ad named .dat", ingest([_copy(good, d / "matrix.dat")], o / "dat.h5ad"), "ok",
             check=total(o / "dat.h5ad", int(src.X.sum()))),
        Case("counts summing past 2**31", ingest([big], o / "big.h5ad"), "ok",
             check=total(o / "big.h5ad", int(read(big).X.sum()))),
        Case("truncated h5ad", ingest([_truncated(good, d / "cut.h5ad")], o / "x.h5ad")),
        Case("random bytes named .h5ad", ingest([_raw(d / "noise.h5ad", os.urandom(4096))], o / "x.h5ad")),
        Case("matrix with 0 cells", ingest([d / "zero_cells.h5ad"], o / "zero.h5ad")),
        Case("text in a var start column", ingest([d / "text_start.h5ad"], o / "x.h5ad"),
             names=("text_start.h5ad", "'start'")),
        Case("one region past its chromosome end", ingest([d / "one_past_end.h5ad"], o / "pe.h5ad"), "ok",
             check=lambda t: "1 of 400 regions lie past the end" in t),
        Case("negative counts", ingest([d / "negative.h5ad"], o / "x.h5ad")),
        Case("non-integer counts", ingest([d / "fraction.h5ad"], o / "x.h5ad")),
        Case("no region coordinates", ingest([d / "no_coords.h5ad"], o / "x.h5ad")),
        Case("hg19 matrix with --genome hg38", ingest([hg19], o / "x.h5ad", "--genome", "hg38"),
             names=("hg19_peaks.h5ad", "'hg19'")),
        Case("MatrixMarket folder", ingest([mtx], o / "mtx.h5ad"), "ok", check=total(o / "mtx.h5ad", int(src.X.sum()))),
        Case("MatrixMarket shape mismatch", ingest([bad_mtx], o / "x.h5ad"), names=("mtx_bad",)),
        Case("valid BED file", ingest([bed], o / "bed.h5ad"), "ok", check=lambda t: read(o / "bed.h5ad").n_obs == 1),
        Case("hg19 narrowPeak with --genome hg38", ingest([hg19_bed], o / "x.h5ad", "--genome", "hg38"),
             names=("hg19.narrowPeak", "'hg19'")),
        Case("BED with a bad line", ingest([_raw(d / "bad.bed", b"chr1\t100\t200\nchr1\tx\t5\n")], o / "x.h5ad"),
             names=("bad.bed", "line 2")),
        Case("info on a truncated h5ad", ["info", str(d / "cut.h5ad")]),
        Case("info on a missing file", ["info", str(d / "missing.h5ad")]),
    ]


def _mtx(folder: Path, src: ad.AnnData) -> Path:
    import scipy.io

    folder.mkdir()
    scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.csr_matrix(src.X).T.tocoo())
    (folder / "barcodes.tsv").write_text("\n".join(src.obs_names) + "\n")
    (folder / "peaks.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in
                                              zip(src.var.chrom, src.var.start, src.var.end)))
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


def output_cases(d: Path, tmp: Path) -> list[Case]:
    import shutil

    import atacformer._atomic as atomic
    import atacformer.io.write as write

    o = d / "out_files"
    o.mkdir()
    good = d / "good_fragments.tsv.gz"
    keep = o / "existing.h5ad"
    keep.write_bytes(b"precious")
    intact = (lambda _t: keep.read_bytes() == b"precious")
    stale = o / ".swept.h5ad.999999.deadbeef.tmp"
    spill = tmp / "atacformer-ingest-999999-stale"

    def tiny_disk():
        Usage = type(shutil.disk_usage("/"))
        return _patched(atomic.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))

    def failing_write():
        real = write._write_csr_blocks

        def fail(f, blocks, shape, dtype, index_dtype):
            real(f, blocks, shape, dtype, index_dtype)
            raise OSError(28, "No space left on device")
        return _patched(write, "_write_csr_blocks", fail)

    def make_stale():
        stale.write_bytes(b"x" * 1000)
        spill.mkdir(exist_ok=True)
        (spill / "bins.bin").write_bytes(b"x" * 1000)

    data = gzip.decompress(good.read_bytes())
    return [
        Case("output exists, no --overwrite", ingest([good], keep), names=("existing.h5ad", "--overwrite")),
        Case("output exists, --overwrite", ingest([good], o / "existing2.h5ad", "--overwrite"), "ok",
             setup=lambda: (o / "existing2.h5ad").write_bytes(b"old") and None,
             check=lambda t: read(o / "existing2.h5ad").n_obs == 20),
        Case("output is an existing folder", ingest([good], _mkdir(o / "a_folder")), names=("a_folder",)),
        Case("disk full (known before writing)", ingest([good], keep, "--overwrite"), setup=tiny_disk,
             names=("existing.h5ad", "free space")),
        Case("write error while writing, old output kept", ingest([good], keep, "--overwrite"),
             setup=failing_write, names=("existing.h5ad", "No space left")),
        Case("old output intact after the failures", ["info", str(d / "out" / "good.h5ad")], "ok", check=intact),
        Case("stale temporaries of dead processes swept", ingest([good], o / "swept.h5ad"), "ok", setup=make_stale,
             check=lambda t: not stale.exists() and not spill.exists()),
        Case("fragments through a pipe (FIFO)", ingest([o / "pipe_fragments"], o / "pipe.h5ad"), "ok",
             setup=lambda: _fifo(o / "pipe_fragments", data), check=lambda t: read(o / "pipe.h5ad").n_obs == 20),
        Case("tokenize into an existing folder", ["tokenize", str(d / "out" / "good.h5ad"), "-o", str(_mkdir(o / "c"))],
             names=("c", "--overwrite")),
        Case("tokenize a truncated h5ad", ["tokenize", str(d / "cut.h5ad"), "-o", str(o / "c2")], names=("cut.h5ad",)),
    ]


def model_cases(d: Path) -> list[Case]:
    import json
    import shutil

    import torch

    from atacformer.models import Atacformer, AtacformerConfig
    from atacformer.tokenize import BinVocab

    torch.manual_seed(0)
    base = d / "model"
    Atacformer(AtacformerConfig.from_preset("tiny", BinVocab("hg38", int(BIN)))).save_pretrained(base)
    cells, out = d / "out" / "good.h5ad", d / "out_model"
    out.mkdir()

    def variant(name: str, edit) -> Path:
        m = d / name
        shutil.copytree(base, m)
        edit(m)
        return m

    def d_model(m):
        cfg = json.loads((m / "config.json").read_text())
        cfg["d_model"] = 2 * cfg["d_model"]
        (m / "config.json").write_text(json.dumps(cfg))

    trunc = variant("model_truncated", lambda m: _truncated(m / "model.safetensors", m / "model.safetensors"))
    changed = variant("model_dmodel", d_model)
    vocab = variant("model_vocab", lambda m: (m / "vocab.json").write_text('{"genome": "hg38", "bin_'))
    config = variant("model_config", lambda m: (m / "config.json").write_text("{nope"))
    embed = ["embed", "{m}", str(cells), "-o", str(out / "e.h5ad")]
    return [
        Case("truncated model.safetensors", [a.format(m=trunc) for a in embed], names=("model.safetensors",)),
        Case("config.json with d_model changed", [a.format(m=changed) for a in embed], names=("model.safetensors",)),
        Case("corrupt vocab.json", [a.format(m=vocab) for a in embed], names=("vocab.json",)),
        Case("config.json not JSON", [a.format(m=config) for a in embed], names=("config.json",)),
        Case("embed an unreadable h5ad", [a.format(m=base) for a in embed[:2]] + [str(d / "cut.h5ad"), "-o",
                                                                                str(out / "e2.h5ad")],
             names=("cut.h5ad",)),
    ]


def dna_cases(d: Path) -> list[Case]:
    import json

    m = _mkdir(d / "remote_model")
    marker = d / "remote_code_ran"
    (m / "config.json").write_text(json.dumps({"model_type": "custom", "auto_map": {
        "AutoConfig": "custom.Config", "AutoModelForMaskedLM": "custom.Model"}}))
    (m / "custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    fa = d / "toy.fa"
    fa.write_text(">chr1\n" + "ACGT" * 5000 + "\n")
    sizes = d / "toy.sizes"
    sizes.write_text("chr1\t20000\n")
    base = ["dna-embed", "--genome", str(sizes), "--fasta", str(fa), "--bin-size", "1000"]
    done = d / "out_dna"
    return [
        Case("NT model folder with its own code", base + ["--method", "nt", "--model", str(m), "-o", str(d / "nt")],
             names=("remote_model", "--trust-remote-code"), check=lambda t: not marker.exists()),
        Case("dna-embed k-mer table", base + ["--dim", "8", "-o", str(done)], "ok",
             check=lambda t: (done / "meta.json").exists()),
        Case("dna-embed into a finished table", base + ["--dim", "8", "-o", str(done)], names=("out_dna", "--overwrite")),
    ]


def signal_cases(d: Path, tmp: Path) -> list[tuple[str, str, str, int]]:
    """Kill an ingest mid-run (subprocess): SIGTERM must clean up; after SIGKILL the next run must."""
    big = d / "big_fragments.tsv"
    rng = np.random.default_rng(5)
    n = 1_500_000
    df = pd.DataFrame({"c": rng.choice([f"chr{i}" for i in range(1, 20)], n), "s": rng.integers(0, 50_000_000, n),
                       "b": rng.integers(0, 2000, n)})
    df["e"] = df["s"] + rng.integers(60, 600, n)
    df["b"] = "CELL" + df["b"].astype(str) + "AACCGGTT-1"
    df[["c", "s", "e", "b"]].to_csv(big, sep="\t", header=False, index=False)
    out = _mkdir(d / "out_signals")
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "atacformer", "ingest", str(big), "-o", str(out / "big.h5ad"), "--bin-size", BIN,
           "--force-genome"]
    results = []
    for sig, name in ((signal.SIGTERM, "SIGTERM mid-ingest"), (signal.SIGKILL, "SIGKILL mid-ingest, then rerun")):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(3.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        rc = proc.returncode
        if sig == signal.SIGKILL:  # the next run (any ingest to the same output) sweeps what was left
            again = subprocess.run(cmd[:4] + [str(d / "good_fragments.tsv.gz")] + cmd[5:], env=env,
                                   capture_output=True)
            rc = rc if again.returncode == 0 else f"{rc}, rerun {again.returncode}"
        left = len(leftovers([out, tmp]))
        ok = rc == 143 if sig == signal.SIGTERM else rc == -9
        tb = b"Traceback" in err
        kind = "traceback" if tb else ("ok" if ok else "unexpected error")
        results.append((name, kind, f"exit {rc}", left))
        for p in leftovers([out, tmp]):  # do not count them twice
            _remove(p)
    return results


def _remove(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


KINDS = ("ok", "clear error", "unclear error", "unexpected error", "traceback", "silent wrong output")


def main_benchmark() -> int:
    work = Path(tempfile.mkdtemp(prefix="robustness-"))
    tmp = _mkdir(work / "tmp")
    tempfile.tempdir = str(tmp)  # spill folders of in-process runs land here, to be counted
    d = _mkdir(work / "data")
    t0 = time.time()
    cases = fragment_cases(d) + region_cases(d) + output_cases(d, tmp) + dna_cases(d)
    cases += model_cases(d)
    rows = []
    for case in cases:
        kind, detail, n_left = run_case(case, [d, tmp])
        rows.append((case.name, kind, detail, n_left))
    rows += signal_cases(d, tmp)
    print(f"{'case':48s} {'result':20s} leftovers  detail")
    for name, kind, detail, n_left in rows:
        print(f"{name[:48]:48s} {kind:20s} {n_left:9d}  {detail.splitlines()[-1][:110] if detail else ''}")
    counts = {k: sum(r[1] == k for r in rows) for k in KINDS}
    print(f"\ncases: {len(rows)}   " + "   ".join(f"{k}: {v}" for k, v in counts.items())
          + f"   leftovers: {sum(r[3] for r in rows)}   ({time.time() - t0:.0f} s)")
    _remove(work)
    return 0 if counts["traceback"] == counts["silent wrong output"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main_benchmark())
