import numpy as np
import pytest

from atacformer.genome import BinIndex, Genome, get_genome, normalize_chrom


def test_builtin_human_and_mouse_chromosome_sets():
    hg38 = get_genome("hg38")
    assert hg38.chroms == [f"chr{i}" for i in range(1, 23)] + ["chrX"]
    assert get_genome("mm10").n_chroms == 20
    assert get_genome("GRCh37").name == "hg19"


def test_hg38_bin_count_matches_design():
    bins = get_genome("hg38").bins(5000)
    expected = sum(-(-n // 5000) for n in get_genome("hg38").chrom_sizes.values())
    assert bins.n_bins == expected
    assert 600_000 < bins.n_bins < 610_000  # ~606k in the design


@pytest.mark.parametrize("raw,canon", [("1", "chr1"), ("chr1", "chr1"), ("MT", "chrM"), ("chrMT", "chrM"),
                                       ("x", "chrX"), ("chrX", "chrX"), ("Chr2", "chr2")])
def test_normalize_chrom(raw, canon):
    assert normalize_chrom(raw) == canon


def test_bin_ids_names_and_last_bin_clipped():
    g = Genome.from_chrom_sizes({"chr1": 12_000, "chr2": 5_000, "chrM": 100}, name="toy")
    bins = g.bins(5000)
    assert bins.n_bins == 3 + 1
    assert list(bins.names()) == ["chr1:0-5000", "chr1:5000-10000", "chr1:10000-12000", "chr2:0-5000"]
    ids = bins.bin_ids(np.array([0, 0, 0, 1]), np.array([0, 4999, 11_999, 4_000]))
    assert ids.tolist() == [0, 0, 2, 3]
    assert bins.ids_from_names(["chr1:10000-12000", "1_5000_10000", "chr2:0-4000", "chrY:0-5000"]).tolist() == [
        2, 1, -1, -1]
    assert bins.ids_from_names(bins.names()).tolist() == [0, 1, 2, 3]  # fast path: the index's own names
    swapped = list(bins.names())
    swapped[0], swapped[3] = swapped[3], swapped[0]
    assert bins.ids_from_names(swapped).tolist() == [3, 1, 2, 0]  # same length, other order: parsed
    c, s, e = bins.coords(np.array([2]))
    assert (c[0], s[0], e[0]) == (0, 10_000, 12_000)


def test_blacklist_flags_bins(tmp_path):
    bl = tmp_path / "bl.bed"
    bl.write_text("chr1\t4990\t5010\n1\t11000\t11500\n")
    g = Genome.from_chrom_sizes({"chr1": 12_000}, name="toy", blacklist=bl)
    assert g.bins(5000).blacklist_mask().tolist() == [True, True, True]
    assert g.bins(1000).blacklist_mask().sum() == 3  # bins 4, 5 and 11


def test_genes_bed_and_gtf_tss(tmp_path):
    bed = tmp_path / "g.bed"
    bed.write_text("chr1\t100\t200\tA\t+\nchr1\t300\t400\tB\t-\nchrUn_x\t1\t2\tC\t+\n")
    gtf = tmp_path / "g.gtf"
    gtf.write_text('1\tsrc\tgene\t101\t200\t.\t+\t.\tgene_id "g1"; gene_name "A";\n'
                   '1\tsrc\texon\t101\t150\t.\t+\t.\tgene_id "g1";\n')
    g = Genome.from_chrom_sizes({"chr1": 1000}, genes=bed)
    df = g.genes()
    assert df["gene"].tolist() == ["A", "B"] and df["tss"].tolist() == [100, 399]
    g2 = Genome.from_chrom_sizes({"chr1": 1000}, genes=gtf)
    assert g2.genes()[["gene", "start", "tss"]].values.tolist() == [["A", 100, 100]]


def test_builtin_genes_have_tss_on_modelled_chromosomes():
    genes = get_genome("hg19").genes()
    assert len(genes) > 20_000
    assert set(genes["chrom"]) <= set(get_genome("hg19").chroms)


def test_uns_roundtrip_custom_genome():
    g = Genome.from_chrom_sizes({"chr1": 12_000, "chr2": 7_000}, name="toy")
    bins = g.bins(1000)
    again = BinIndex.from_uns(bins.uns())
    assert again.n_bins == bins.n_bins and again.genome.chroms == ["chr1", "chr2"]
    with pytest.raises(ValueError, match="1000 bp"):
        again.check_compatible("toy", 5000)


def test_unknown_genome_is_clear_error():
    with pytest.raises(ValueError, match="unknown genome"):
        get_genome("hg37")


def test_from_uns_keeps_chromosome_order_when_keys_come_back_sorted_as_text():
    sizes = {f"chr{i}": 1000 * i for i in range(1, 13)}
    bins = Genome.from_chrom_sizes(sizes, name="toy12").bins(500)
    uns = bins.uns()
    text_sorted = {k: uns["chrom_sizes"][k] for k in sorted(uns["chrom_sizes"])}  # what an h5ad round trip gives
    assert list(text_sorted)[:3] == ["chr1", "chr10", "chr11"]
    for u in ({**uns, "chrom_sizes": text_sorted}, {k: v for k, v in {**uns, "chrom_sizes": text_sorted}.items()
                                                    if k != "chroms"}):
        again = BinIndex.from_uns(u)
        assert again.genome.chroms == bins.genome.chroms
        assert list(again.names()) == list(bins.names())
