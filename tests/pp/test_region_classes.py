"""Region classes of bins: the vectorised per-base priority + bin rule against a brute force, user class
files (BED, HOMER, TSV), the shipped annotations."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.genome import Genome, get_genome
from atacformer.pp import annotate_region_classes, region_classes
from atacformer.pp.region_classes import (
    bin_var,
    builtin_classes,
    flatten_intervals,
    gene_intervals,
    read_runs,
    write_runs,
)

SIZES = {"chr1": 1030, "chr2": 470}  # bins of 100 bp, the last bin of each chromosome clipped


def _genome() -> Genome:
    return Genome.from_chrom_sizes(SIZES, name="toy")


def _random_bed(path, rng, classes, n=40):
    rows = []
    for _ in range(n):
        chrom = rng.choice(list(SIZES))
        start = int(rng.integers(0, SIZES[chrom] + 50))  # some run past the chromosome end (clipped)
        rows.append(f"{chrom}\t{start}\t{start + int(rng.integers(1, 160))}\t{rng.choice(classes)}")
    path.write_text("track name=x\n" + "\n".join(rows) + "\n")
    return [r.split("\t") for r in rows]


def _brute_force(rows, classes, bin_size, min_fraction):
    """Per base: the highest-priority class covering it; per bin: the rule, written out loop by loop."""
    out = []
    for chrom, size in SIZES.items():
        base = np.full(size, len(classes))  # background code
        for c, s, e, name in rows:
            if c == chrom:
                seg = base[int(s):int(e)]
                np.minimum(seg, classes.index(name), out=seg)
        for b0 in range(0, size, bin_size):
            counts = np.bincount(base[b0:b0 + bin_size], minlength=len(classes) + 1)
            length = min(bin_size, size - b0)
            ok = [k for k in range(len(classes)) if counts[k] > 0 and counts[k] >= min_fraction * length]
            out.append(ok[0] if ok else int(np.argmax(counts)))
    return [([*classes, "other"])[k] for k in out]


@pytest.mark.parametrize("min_fraction", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classes_match_brute_force_overlap(tmp_path, seed, min_fraction):
    classes = ["promoter", "CDS", "enhancer", "CTCF"]  # built-in names first, then first appearance
    rows = _random_bed(tmp_path / "c.bed", np.random.default_rng(seed), classes)
    got = region_classes(_genome(), 100, tmp_path / "c.bed", min_fraction=min_fraction,
                         priority=classes)
    want = _brute_force(rows, classes, 100, min_fraction)
    assert list(got.astype(str)) == want
    assert list(got.cat.categories) == [*classes, "other"]
    assert got.index[0] == "chr1:0-100" and got.index[-1] == "chr2:400-470"


def test_default_priority_puts_homer_names_first(tmp_path):
    (tmp_path / "c.bed").write_text("chr1\t0\t100\tenhancer\nchr1\t0\t100\tintron\nchr1\t0\t60\tpromoter\n")
    got = region_classes(_genome(), 100, tmp_path / "c.bed", min_fraction=0.5)
    assert list(got.cat.categories) == ["promoter", "intron", "enhancer", "other"]
    assert got.iloc[0] == "promoter" and (got.iloc[1:] == "other").all()


def test_gene_windows_follow_the_strand():
    """+ gene [200, 500): promoter [−800→0, 300), TTS [400, 1030); − gene on chr2 [100, 300): promoter
    [200, 470), TTS [0, 200); CDS inside the + gene; intron = the rest of the gene bodies."""
    genes = pd.DataFrame({"chrom": ["chr1", "chr2"], "start": [200, 100], "end": [500, 300], "strand": ["+", "-"]})
    cds = pd.DataFrame({"chrom": ["chr1"], "start": [320], "end": [360]})
    order = builtin_classes("hg38")
    runs = flatten_intervals(gene_intervals(genes, {"CDS": cds}), _genome(), order)
    got = list(runs.itertuples(index=False, name=None))
    assert got == [("chr1", 0, 300, "promoter"), ("chr1", 300, 320, "intron"), ("chr1", 320, 360, "CDS"),
                   ("chr1", 360, 400, "intron"), ("chr1", 400, 1030, "TTS"),
                   ("chr2", 0, 200, "TTS"), ("chr2", 200, 470, "promoter")]


def test_runs_round_trip(tmp_path):
    runs = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2"], "start": [5, 40, 0], "end": [30, 41, 470],
                         "class": ["TTS", "promoter", "intron"]})
    write_runs(runs, builtin_classes("hg38"), tmp_path / "r.tsv.gz")
    back, classes = read_runs(tmp_path / "r.tsv.gz")
    assert classes == builtin_classes("hg38")
    pd.testing.assert_frame_equal(back, runs, check_dtype=False)


def test_bin_tsv_and_series(tmp_path):
    (tmp_path / "b.tsv").write_text("bin\tclass\nchr1:100-200\tCTCF\nchr2:400-470\tenhancer\n")
    got = region_classes(_genome(), 100, tmp_path / "b.tsv")
    assert got["chr1:100-200"] == "CTCF" and got["chr2:400-470"] == "enhancer"
    assert (got.drop(["chr1:100-200", "chr2:400-470"]) == "other").all()
    same = region_classes(_genome(), 100, pd.Series({"chr1:100-200": "CTCF", "chr2:400-470": "enhancer"}))
    assert same.astype(str).equals(got.astype(str))
    (tmp_path / "bad.tsv").write_text("chr1:100-200\tCTCF\nchr1:150-250\tCTCF\n")
    with pytest.raises(ValueError, match=r"bad.tsv: 'chr1:150-250' is not a 100 bp bin"):
        region_classes(_genome(), 100, tmp_path / "bad.tsv")


def test_homer_annotatepeaks_output(tmp_path):
    head = "PeakID (cmd=annotatePeaks.pl b.bed hg38)\tChr\tStart\tEnd\tStrand\tPeak Score\tFocus Ratio\tAnnotation"
    lines = [head, "p1\tchr1\t101\t200\t+\t0\tNA\tpromoter-TSS (NM_1)",
             "p2\tchr1\t201\t300\t+\t0\tNA\tintron (NM_1, intron 1 of 3)",
             "p3\tchr2\t1\t100\t+\t0\tNA\tIntergenic", "p4\tchr2\t101\t200\t+\t0\tNA\tnon-coding (NR_5)"]
    (tmp_path / "h.txt").write_text("\n".join(lines) + "\n")
    got = region_classes(_genome(), 100, tmp_path / "h.txt", min_fraction=1.0)
    assert got["chr1:100-200"] == "promoter" and got["chr1:200-300"] == "intron"
    assert got["chr2:0-100"] == "intergenic" and got["chr2:100-200"] == "ncRNA" and got["chr1:0-100"] == "other"


def test_bad_class_files_name_the_line(tmp_path):
    (tmp_path / "x.bed").write_text("chr1\t0\t100\tA\nchr1\tten\t100\tA\n")
    with pytest.raises(ValueError, match=r"x.bed:2: expected chrom"):
        region_classes(_genome(), 100, tmp_path / "x.bed")
    (tmp_path / "y.bed").write_text("chr1\t50\t50\tA\n")
    with pytest.raises(ValueError, match=r"y.bed:1: empty interval"):
        region_classes(_genome(), 100, tmp_path / "y.bed")
    with pytest.raises(ValueError, match="no built-in gene annotation"):
        region_classes(_genome(), 100)


@pytest.mark.parametrize("name", ["hg38", "hg19", "mm10"])
def test_builtin_genomes_give_every_bin_a_class(name):
    got = region_classes(name)
    bins = get_genome(name).bins(5000)
    assert len(got) == bins.n_bins and got.notna().all() and got.index.equals(pd.Index(bins.names()))
    counts = got.value_counts()
    assert list(got.cat.categories) == [*builtin_classes(name), "intergenic"]
    assert (counts > 0).all()
    assert 0.04 < counts["promoter"] / len(got) < 0.15 and counts["intergenic"] / len(got) > 0.3


def test_builtin_promoter_bins_hold_tsss():
    got = region_classes("hg19")
    genome = get_genome("hg19")
    genes = genome.genes()
    tss_bins = genome.bins(5000).bin_ids([genome.chrom_index(c) for c in genes["chrom"]], genes["tss"])
    assert (got.iloc[tss_bins] == "promoter").mean() > 0.8


def test_annotate_region_classes_scanpy_contract():
    bins = get_genome("hg19").bins(5000)
    pick = np.array([0, 10, 3000, 600_000])
    adata = ad.AnnData(sp.csr_matrix((2, len(pick)), dtype=np.float32), var=bins.var().iloc[pick])
    adata.uns.update(bins.uns())
    new = annotate_region_classes(adata, copy=True, key_added="cls")
    assert "cls" not in adata.var and list(new.var["cls"]) == list(region_classes("hg19").iloc[pick])
    assert annotate_region_classes(adata) is None and adata.var["region_class"].equals(
        new.var["cls"].rename("region_class"))


def test_bin_var_adds_classes_for_builtin_genomes_only():
    var = bin_var(get_genome("mm10").bins(20_000))
    assert var["region_class"].notna().all() and len(var) == get_genome("mm10").bins(20_000).n_bins
    assert "region_class" not in bin_var(_genome().bins(100))


def test_cli_regions_annotate(tmp_path, capsys):
    from atacformer.cli import main

    (tmp_path / "c.bed").write_text("chr1\t0\t100\tenhancer\nchr1\t0\t100\tCTCF\n")
    sizes = tmp_path / "toy.sizes"
    sizes.write_text("".join(f"{c}\t{n}\n" for c, n in SIZES.items()))
    out = tmp_path / "bins.tsv"
    assert main(["regions", "annotate", "--genome", str(sizes), "--bin-size", "100", "--classes",
                 str(tmp_path / "c.bed"), "--priority", "CTCF,enhancer", "-o", str(out)]) == 0
    table = pd.read_csv(out, sep="\t", index_col=0)
    assert list(table.columns) == ["region_class"] and len(table) == 16
    assert table.loc["chr1:0-100", "region_class"] == "CTCF" and (table["region_class"].iloc[1:] == "other").all()
    assert "CTCF\t1\t" in capsys.readouterr().out
    assert main(["regions", "annotate", "--genome", "hg19", "--bin-size", "1000000",
                 "-o", str(tmp_path / "h.tsv")]) == 0
    hg19 = pd.read_csv(tmp_path / "h.tsv", sep="\t")
    assert len(hg19) == get_genome("hg19").bins(1_000_000).n_bins and hg19["region_class"].notna().all()
    # errors: exit code 2 with the file and line, nothing written
    (tmp_path / "bad.bed").write_text("chr1\tx\t5\tA\n")
    assert main(["regions", "annotate", "--genome", str(sizes), "--classes", str(tmp_path / "bad.bed"),
                 "-o", str(tmp_path / "no.tsv")]) == 2
    assert "bad.bed:1" in capsys.readouterr().err and not (tmp_path / "no.tsv").exists()


def test_ingested_anndata_carry_region_classes(tmp_path):
    from atacformer.genome import data_path
    from atacformer.io import ingest_fragments

    out = ingest_fragments(data_path("pbsmall_fragments_hg19.tsv.gz"), tmp_path / "a.h5ad", genome="hg19",
                           min_fragments=100)
    adata = ad.read_h5ad(out, backed="r")
    assert adata.var["region_class"].astype(str).tolist() == region_classes("hg19").astype(str).tolist()
