import gzip

import numpy as np
import pytest

from atacformer.io import ingest_fragments, read_fragments

from .conftest import write_fragments


def test_per_cell_qc_values(tmp_path, toy_genome):
    rows = [
        ("chr1", 9990, 10011, "A", 3),   # both insertions within ±50 bp of the TSS at 10,000; NFR; 3 reads
        ("chr1", 11950, 12400, "A", 1),  # one insertion 1,950 bp downstream (flank); 450 bp: neither NFR nor mono
        ("chr2", 100, 300, "A", 1),      # mono-nucleosomal
        ("chrM", 10, 100, "A", 1),       # mitochondrial: QC only, never counted in bins
        ("chr2", 5000, 5100, "B", 1),
    ]
    a = read_fragments(write_fragments(tmp_path / "f.tsv", rows), genome=toy_genome, bin_size=1000, min_fragments=0)
    A = a.obs.loc["A"]
    assert A["n_fragments"] == 6 and A["n_unique"] == 4
    assert A["duplication_rate"] == pytest.approx(1 - 4 / 6)
    assert A["frac_mito"] == pytest.approx(1 / 4)
    assert A["nucleosome_signal"] == pytest.approx(1 / 1)
    assert A["tss_enrichment"] == pytest.approx((2 / 101) / (1 / 202))
    assert A["frac_promoter"] == pytest.approx(2 / 6)  # promoter bins 8–10 (−2 kb…+0.5 kb of the + strand TSS)
    assert a.obs.loc["B", "frac_promoter"] == 0
    assert a.X[a.obs_names.get_loc("A")].sum() == 6  # chrM excluded


def test_labels_whitelist_and_min_fragments(tmp_path, toy_genome):
    rows = [("chr1", i * 10, i * 10 + 80, bc, 1) for i in range(50) for bc in ("A", "B", "C")]
    rows += [("chr1", 5, 90, "D", 1)]
    path = write_fragments(tmp_path / "f.tsv.gz", rows)
    labels = tmp_path / "labels.tsv"
    labels.write_text("barcode\tcell_type\nA\tT cell\nB\tB cell\nD\tMono\n")
    a = read_fragments(path, genome=toy_genome, min_fragments=10, labels=labels)
    assert list(a.obs_names) == ["A", "B"]  # C has no label, D too few fragments
    assert list(a.obs["cell_type"]) == ["T cell", "B cell"]
    b = read_fragments(path, genome=toy_genome, min_fragments=0, whitelist=["C", "D"])
    assert list(b.obs_names) == ["C", "D"]
    with pytest.raises(ValueError, match="no cells left after filters"):
        read_fragments(path, genome=toy_genome, min_fragments=1000)
    dup = tmp_path / "dup.tsv"
    dup.write_text("barcode\tcell_type\nA\tx\nA\ty\n")
    with pytest.raises(ValueError, match=r"dup\.tsv.*duplicate barcode 'A'"):
        read_fragments(path, genome=toy_genome, labels=dup)


def test_several_files_keep_duplicate_barcodes_apart(tmp_path, toy_genome):
    f1 = write_fragments(tmp_path / "s1_fragments.tsv.gz", [("chr1", 10 + i, 100, "AAA-1", 1) for i in range(3)])
    f2 = write_fragments(tmp_path / "s2_fragments.tsv.gz", [("chr2", 10 + i, 100, "AAA-1", 1) for i in range(2)])
    a = read_fragments([f1, f2], genome=toy_genome, min_fragments=0)
    assert list(a.obs_names) == ["s1#AAA-1", "s2#AAA-1"]
    assert list(a.obs["sample"]) == ["s1", "s2"] and list(a.obs["barcode"]) == ["AAA-1", "AAA-1"]
    assert list(a.obs["n_unique"]) == [3, 2]
    same = tmp_path / "other"
    same.mkdir()
    with pytest.raises(ValueError, match="duplicate sample names"):
        read_fragments([f1, f1], genome=toy_genome, min_fragments=0)
    with pytest.raises(ValueError, match="duplicate sample names"):
        read_fragments([f1, f2], genome=toy_genome, sample_names=["x", "x"])


def test_unknown_contigs_counted_and_no_match_is_an_error(tmp_path, toy_genome):
    rows = [("chr1", 10, 100, "A", 1), ("chrUn_gl0001", 10, 100, "A", 1), ("chrUn_gl0001", 50, 90, "A", 1)]
    a = read_fragments(write_fragments(tmp_path / "f.tsv", rows), genome=toy_genome, min_fragments=0)
    ing = a.uns["ingest"]
    assert list(ing["unknown_contigs"]) == ["chrUn_gl0001"] and list(ing["unknown_contig_fragments"]) == [2]
    assert ing["n_fragments_unknown_contigs"] == 2
    bad = write_fragments(tmp_path / "mouse.tsv", [("NC_000067.6", 10, 100, "A", 1)])
    with pytest.raises(ValueError, match=r"mouse\.tsv.*no contig is a chromosome of genome 'toy'.*hg19 vs hg38"):
        read_fragments(bad, genome=toy_genome, min_fragments=0)
    past = write_fragments(tmp_path / "build.tsv", [("chr2", 15_000, 15_100, "A", 1)])
    with pytest.raises(ValueError, match="past the end of their chromosome"):
        read_fragments(past, genome=toy_genome, min_fragments=0)


def test_chromosome_names_without_prefix_and_unsorted_input(tmp_path, toy_genome):
    rows = [("2", 9000, 9100, "A", 1), ("1", 50, 150, "A", 1), ("1", 10, 60, "B", 1), ("2", 10, 20, "A", 1)]
    a = read_fragments(write_fragments(tmp_path / "f.tsv", rows), genome=toy_genome, bin_size=1000,
                       min_fragments=0)
    A = a.X[a.obs_names.get_loc("A")].toarray().ravel()
    names = np.asarray(a.var_names)
    assert dict(zip(names[A > 0], A[A > 0], strict=False)) == {"chr1:0-1000": 2, "chr2:0-1000": 2, "chr2:9000-10000": 2}


def test_no_half_written_output_on_error(tmp_path, toy_genome):
    good = write_fragments(tmp_path / "good.tsv", [("chr1", 10, 100, "A", 1)])
    out = tmp_path / "cells.h5ad"
    ingest_fragments(good, out, genome=toy_genome, min_fragments=0)
    before = out.read_bytes()
    bad = tmp_path / "bad.tsv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("chr1\t10\t100\tA\t1\n" * 100 + "chr1\toops\n")
    with pytest.raises(ValueError, match="line 101"):
        ingest_fragments(bad, out, genome=toy_genome, min_fragments=0)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv.gz", "cells.h5ad", "genes.bed", "good.tsv"]
    fresh = tmp_path / "new.h5ad"
    with pytest.raises(ValueError):
        ingest_fragments(good, fresh, genome=toy_genome, min_fragments=99)
    assert not fresh.exists()
