"""The cases of ``benchmarks/robustness.py``: fragment, table, region-matrix, output, model and DNA inputs."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from robustness_data import (
    BIN,
    Case,
    _bed,
    _copy,
    _fifo,
    _mkdir,
    _mtx,
    _patched,
    _raw,
    _truncated,
    ingest,
    matrix,
    near_tss_rows,
    read,
    write_rows,
)


def n_obs_is(path, n):
    return lambda _text: read(path).n_obs == n


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
    ]
    return cases + line_cases(d, rows, good, o) + table_cases(d, rows, good, o)


def line_cases(d: Path, rows, good: Path, o: Path) -> list[Case]:
    n_cells = len({r[3] for r in rows})

    def bad_line(name, line, **kw):
        r = list(rows)
        r.insert(5, line)
        return write_rows(d / name, r, **kw)

    return [
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


def table_cases(d: Path, rows, good: Path, o: Path) -> list[Case]:
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
        Case("same file name twice: samples named by folder",
             ingest([good, _copy(good, _mkdir(d / "other") / good.name)], o / "two.h5ad"), "ok",
             check=lambda t: set(read(o / "two.h5ad").obs["sample"]) == {"data", "other"}),
        Case("same sample name twice", ingest([good, good], o / "x.h5ad", "--sample-names", "s,s"),
             names=("duplicate sample names",)),
        Case("--sample-names count mismatch", ingest([good], o / "x.h5ad", "--sample-names", "a,b"),
             names=("sample names",)),
    ]


def _region_inputs(d: Path) -> ad.AnnData:
    """Write the region-matrix inputs of :func:`region_cases` into ``d``; returns the valid matrix."""
    good = matrix(d / "peaks.h5ad", "hg38")
    src = read(good)
    matrix(d / "big_counts.h5ad", "hg38", dtype=np.int64, values=2**31 - 10)
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
    matrix(d / "hg19_peaks.h5ad", "hg19", n_peaks=600, seed=4)
    _mtx(d / "mtx", src)
    (_mtx(d / "mtx_bad", src) / "barcodes.tsv").write_text("only_one\n")
    return src


def region_cases(d: Path) -> list[Case]:
    o = d / "out_regions"
    o.mkdir()
    src = _region_inputs(d)
    good, big, hg19, mtx, bad_mtx = (d / n for n in ("peaks.h5ad", "big_counts.h5ad", "hg19_peaks.h5ad", "mtx",
                                                     "mtx_bad"))

    def total(path, expected):
        return lambda _t: int(read(path).X.sum()) == expected and read(path).X.data.min() > 0

    bed = d / "regions.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\tp{i}\n" for i, (c, s, e) in
                           enumerate(zip(src.var.chrom, src.var.start, src.var.end, strict=False))))
    hg19_bed = d / "hg19.narrowPeak"
    v = read(hg19).var
    hg19_bed.write_text("".join(f"{c}\t{s}\t{e}\tp{i}\t0\t.\t1\t1\t1\t250\n" for i, (c, s, e) in
                                enumerate(zip(v.chrom, v.start, v.end, strict=False))))
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


def output_cases(d: Path, tmp: Path) -> list[Case]:
    import shutil

    import atacformer._atomic as atomic
    from atacformer.io import write

    o = d / "out_files"
    o.mkdir()
    good = d / "good_fragments.tsv.gz"
    keep = o / "existing.h5ad"
    keep.write_bytes(b"precious")
    def intact(_t):
        return (keep.read_bytes() == b"precious")
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
        Case("dna-embed into a finished table", base + ["--dim", "8", "-o", str(done)],
             names=("out_dna", "--overwrite")),
    ]


