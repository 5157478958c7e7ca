"""One test per class of bad input / fault (issue 15): no silent wrong output, no lost output, clear errors."""

import gzip
import json
import os
import signal
import threading

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer import _atomic
from atacformer.cli import main
from atacformer.genome import get_genome
from atacformer.io import detect_kind, read_fragments, read_h5ad, read_region_matrix
from atacformer.io._dups import DuplicateLines
from atacformer.io.regions import rebin

BIN = "100000"


def write(path, rows, header="# test\n"):
    text = header + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def ingest(*args):
    return main(["ingest", *map(str, args), "--bin-size", BIN, "--min-fragments", "1"])


@pytest.fixture(scope="module")
def hg38_rows():
    rng = np.random.default_rng(1)
    genes = get_genome("hg38").genes()
    genes = genes[genes["chrom"] == "chr1"]
    tss = genes["tss"].to_numpy()
    rows = []
    for _c in range(8):
        bc = "".join(rng.choice(list("ACGT"), 16)) + "-1"
        start = tss[rng.integers(0, tss.size, 150)] + rng.integers(-300, 300, 150)
        rows += [("chr1", int(s), int(s) + 150, bc, 1) for s in start]
    return sorted(rows)


def test_exact_duplicate_lines_are_an_error_sorted_or_not(tmp_path, hg38_rows):
    shuffled = [hg38_rows[i] for i in np.random.default_rng(0).permutation(len(hg38_rows))]
    for name, rows in (("sorted.tsv", hg38_rows + hg38_rows), ("unsorted.tsv", shuffled + hg38_rows)):
        with pytest.raises(ValueError, match=rf"{name}: 1200 of 2400 fragment lines \(50.0%\) are exact copies"):
            read_fragments(write(tmp_path / name, rows), genome="hg38", bin_size=int(BIN), min_fragments=1)
    a = read_fragments(tmp_path / "sorted.tsv", genome="hg38", bin_size=int(BIN), min_fragments=1,
                       allow_duplicate_lines=True)
    assert a.uns["ingest"]["n_duplicate_lines"] == 1200
    dups = DuplicateLines(max_hashes=1000)  # sampled: estimate, copies of a line are sampled together
    x = np.arange(50_000)
    for _ in range(2):
        dups.add(x % 100, x % 3, x, x + 10)
    assert not dups.exact and 0.8 * 50_000 < dups.count() < 1.2 * 50_000


def test_input_type_from_content_not_name(tmp_path, hg38_rows, caplog):
    four = write(tmp_path / "cells.tsv.gz", [r[:4] for r in hg38_rows])
    peaks = tmp_path / "regions.txt"
    peaks.write_text("".join(f"chr1\t{i * 1000}\t{i * 1000 + 500}\tpeak{i}\n" for i in range(50)))
    h5 = tmp_path / "matrix.dat"
    ad.AnnData(X=sp.csr_matrix(np.ones((2, 1), np.int32)), var=pd.DataFrame(index=["chr1:100-600"])).write_h5ad(h5)
    assert [detect_kind(p) for p in (four, peaks, h5)] == ["fragments", "bed", "matrix"]
    out = tmp_path / "o.h5ad"
    with caplog.at_level("INFO"):
        assert ingest(four, "-o", out) == 0
    assert ad.read_h5ad(out).n_obs == 8 and "input type: fragments (detected: 4 columns, barcode-like" in caplog.text
    assert ingest(peaks, "-o", tmp_path / "p.h5ad", "--input-type", "fragments") == 0  # forced: names = barcodes
    assert ad.read_h5ad(tmp_path / "p.h5ad").n_obs == 50


def test_rebinned_counts_above_int32_do_not_overflow():
    X = sp.csr_matrix(np.array([[2**31 - 1, 2**31 - 1, 5]], dtype=np.int64))
    out = rebin(X, np.array([0, 0, 1]), 2)
    assert out.dtype == np.int64 and out.toarray().tolist() == [[2 * (2**31 - 1), 5]]
    assert rebin(sp.csr_matrix(np.array([[1, 2]])), np.array([0, 0]), 1).dtype == np.int32


def test_wrong_genome_build_fails_naming_the_likely_build(tmp_path, hg38_rows, capsys):
    f = write(tmp_path / "f_fragments.tsv", hg38_rows)
    assert ingest(f, "-o", tmp_path / "a.h5ad", "--genome", "hg19") == 2
    err = capsys.readouterr().err
    assert "f_fragments.tsv" in err and "look like genome 'hg38', not 'hg19'" in err and "--force-genome" in err
    assert not (tmp_path / "a.h5ad").exists()
    assert ingest(f, "-o", tmp_path / "a.h5ad", "--genome", "mm10") == 2
    assert ingest(f, "-o", tmp_path / "a.h5ad", "--genome", "hg19", "--force-genome") == 0
    assert ingest(f, "-o", tmp_path / "b.h5ad", "--genome", "hg38") == 0


def test_barcode_fields_labels_and_sample_names(tmp_path, hg38_rows, caplog):
    bad = write(tmp_path / "e.tsv", hg38_rows[:3] + [("chr1", 5, 90, "", 1)])
    with pytest.raises(ValueError, match=r"e.tsv, line 5: .*empty chromosome or barcode"):
        read_fragments(bad, genome="hg38", bin_size=int(BIN), min_fragments=1)
    nul = write(tmp_path / "n.tsv", [("chr1", 5, 90, "AC\0GT", 1)])
    with pytest.raises(ValueError, match=r"n.tsv, line 2: .*NUL"):
        read_fragments(nul, genome="hg38", min_fragments=1)
    spaced = write(tmp_path / "s.tsv", [(c, s, e, b + " " * (i % 2), n) for i, (c, s, e, b, n) in enumerate(hg38_rows)])
    barcodes = sorted({r[3] for r in hg38_rows})
    labels = tmp_path / "labels.tsv"  # no header: the first line is a cell
    labels.write_text("".join(f"{b}\tT{i}\n" for i, b in enumerate(barcodes)))
    a = read_fragments(spaced, genome="hg38", bin_size=int(BIN), min_fragments=1, labels=labels)
    assert sorted(a.obs_names) == barcodes and list(a.obs["label"]) == [f"T{barcodes.index(b)}" for b in a.obs_names]
    two = [write(tmp_path / "a#1.tsv", hg38_rows), write(tmp_path / "b#2.tsv", hg38_rows)]
    b = read_fragments(two, genome="hg38", bin_size=int(BIN), min_fragments=1, labels=labels)
    assert b.n_obs == 16 and set(b.obs["barcode"]) == set(barcodes) and set(b.obs["sample"]) == {"a#1", "b#2"}


def test_matrix_regions_past_end_and_zero_cells(tmp_path, caplog):
    var = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [1000, 300_000_000], "end": [1500, 300_000_500]},
                       index=["r0", "r1"])
    src = ad.AnnData(X=sp.csr_matrix(np.array([[1, 2], [3, 4]], np.int32)), var=var)
    with caplog.at_level("WARNING"):
        a = read_region_matrix(src, genome="hg38", bin_size=int(BIN))
    assert "1 of 2 regions lie past the end of their chromosome" in caplog.text and a.X.sum() == 4
    with pytest.raises(ValueError, match="no cells"):
        read_region_matrix(src[:0].copy(), genome="hg38")
    text = src.copy()
    text.var["start"] = ["1000", "12,5OO"]
    with pytest.raises(ValueError, match=r"var column 'start' must hold integer coordinates; region 1 \('r1'\)"):
        read_region_matrix(text, genome="hg38")


def test_existing_output_needs_overwrite(tmp_path, hg38_rows, capsys):
    f = write(tmp_path / "f_fragments.tsv", hg38_rows)
    out = tmp_path / "o.h5ad"
    out.write_bytes(b"old")
    assert ingest(f, "-o", out) == 2 and out.read_bytes() == b"old"
    assert "--overwrite" in capsys.readouterr().err
    assert ingest(f, "-o", out, "--overwrite") == 0 and ad.read_h5ad(out).n_obs == 8


def test_disk_full_and_write_errors_keep_the_old_output(tmp_path, hg38_rows, monkeypatch):
    import atacformer.io.write as write_mod

    f = write(tmp_path / "f_fragments.tsv", hg38_rows)
    out = tmp_path / "o.h5ad"
    out.write_bytes(b"old")
    monkeypatch.setattr(_atomic.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    usage = type(_atomic.shutil.disk_usage("/"))
    with monkeypatch.context() as m:
        m.setattr(_atomic.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
        assert ingest(f, "-o", out, "--overwrite") == 2
    real = write_mod._write_csr_blocks

    def fail(*args):
        real(*args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_mod, "_write_csr_blocks", fail)
    assert ingest(f, "-o", out, "--overwrite") == 2
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_fragments.tsv", "o.h5ad", "tmp"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, hg38_rows, monkeypatch):
    import atacformer.io.write as write_mod

    f = write(tmp_path / "f_fragments.tsv", hg38_rows)
    real = write_mod._write_csr_blocks

    def killed(*args):
        real(*args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(write_mod, "_write_csr_blocks", killed)
    assert ingest(f, "-o", tmp_path / "o.h5ad") == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_fragments.tsv"]
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    out = tmp_path / "o.h5ad"
    dead, alive = tmp_path / ".o.h5ad.999999.deadbeef.tmp", _atomic.temp_name(out)
    dead.write_text("x")
    alive.write_text("x")
    spill = tmp_path / "atacformer-ingest-999999-x"
    spill.mkdir()
    with _atomic.atomic_path(out) as tmp:
        tmp.write_text("new")
    assert not dead.exists() and alive.exists() and out.read_text() == "new"
    fresh = _atomic.spill_dir("ingest", tmp_path)
    assert not spill.exists() and fresh.name.startswith(f"atacformer-ingest-{os.getpid()}-")


def test_corrupt_model_folder_files_are_clear_errors(tmp_path):
    from atacformer.models import Atacformer, AtacformerConfig
    from atacformer.tokenize import BinVocab

    d = tmp_path / "m"
    Atacformer(AtacformerConfig.from_preset("tiny", BinVocab("hg38", 1_000_000))).save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"d_model": 2 * cfg["d_model"]}))
    with pytest.raises(ValueError, match=r"model.safetensors: weights do not match config.json"):
        Atacformer.from_pretrained(d)
    (d / "config.json").write_text(json.dumps(cfg))
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: cannot read the model weights"):
        Atacformer.from_pretrained(d)
    (d / "vocab.json").write_text('{"genome": ')
    with pytest.raises(ValueError, match=r"vocab.json: corrupt vocabulary file"):
        Atacformer.from_pretrained(d)


def test_tiny_bin_size_is_refused_before_allocating(tmp_path, hg38_rows, capsys):
    f = write(tmp_path / "f_fragments.tsv", hg38_rows)
    assert main(["ingest", str(f), "-o", str(tmp_path / "o.h5ad"), "--bin-size", "1"]) == 2
    assert "--bin-size 1 gives 3,031,042,417 bins" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use --bin-size 182 or more"):
        get_genome("hg38").bins(100).check_memory(available=10**10)
    get_genome("hg38").bins(200).check_memory(available=10**10)


def test_unreadable_files_and_bad_lines_name_the_file(tmp_path, hg38_rows, capsys):
    h5 = tmp_path / "cut.h5ad"
    ad.AnnData(X=sp.random(50, 40, density=0.5, format="csr")).write_h5ad(h5)
    h5.write_bytes(h5.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"cut.h5ad: cannot read this h5ad file"):
        read_h5ad(h5)
    assert main(["info", str(h5)]) == 2 and "cut.h5ad" in capsys.readouterr().err
    for name, header in (("empty.tsv", ""), ("header.tsv.gz", "# only a header\n")):
        p = write(tmp_path / name, [], header=header)
        assert ingest(p, "-o", tmp_path / "o.h5ad", "--input-type", "fragments") == 2
        assert f"{name}: no fragment records (empty or header-only file)" in capsys.readouterr().err
    huge = write(tmp_path / "h.tsv", hg38_rows[:4] + [("chr1", 5, 90, "ACGT", 2**40)] + hg38_rows[4:9])
    with pytest.raises(ValueError, match=rf"h.tsv, line 6: .*count {2**40} is too large"):
        read_fragments(huge, genome="hg38", min_fragments=1)


def test_piped_fragments(tmp_path, hg38_rows):
    fifo = tmp_path / "stdin"
    os.mkfifo(fifo)
    data = gzip.compress("".join("\t".join(map(str, r)) + "\n" for r in hg38_rows).encode())
    feeder = threading.Thread(target=lambda: fifo.write_bytes(data))
    feeder.start()
    assert ingest(fifo, "-o", tmp_path / "o.h5ad") == 0
    feeder.join()
    assert ad.read_h5ad(tmp_path / "o.h5ad").n_obs == 8


def test_nt_remote_code_needs_trust_remote_code(tmp_path):
    from atacformer.dna.nt import check_remote_code

    marker = tmp_path / "ran"
    (tmp_path / "custom.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModelForMaskedLM": "custom.Model"}}))
    fa, sizes = tmp_path / "g.fa", tmp_path / "g.sizes"
    fa.write_text(">chr1\n" + "ACGT" * 500 + "\n")
    sizes.write_text("chr1\t2000\n")
    argv = ["dna-embed", "--genome", str(sizes), "--fasta", str(fa), "--method", "nt", "--model", str(tmp_path),
            "--bin-size", "1000", "-o", str(tmp_path / "t")]
    assert main(argv) == 2 and not marker.exists()
    with pytest.raises(ValueError, match="ships its own Python code .*custom.*--trust-remote-code"):
        check_remote_code(tmp_path, trust_remote_code=False)
    check_remote_code(tmp_path, trust_remote_code=True)  # allowed when asked for
