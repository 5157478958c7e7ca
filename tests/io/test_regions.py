import gzip

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from atacformer.genome import Genome, data_path, get_genome
from atacformer.io import detect_kind, read, read_bed, read_region_matrix


@pytest.fixture
def genome():
    return Genome.from_chrom_sizes({"chr1": 20_000, "chr2": 12_000}, name="toy")


def _matrix(var_names, X):
    return ad.AnnData(X=sp.csr_matrix(np.asarray(X)), obs=pd.DataFrame(index=["c1", "c2"]),
                      var=pd.DataFrame(index=var_names))


def test_region_names_rebinned_by_midpoint(genome):
    # midpoints 4999 (bin 0), 5000 (bin 1), chr2 midpoint 1000; the last region is on an unknown contig
    src = _matrix(["chr1:4900-5099", "chr1_4950_5051", "chr2-900-1100", "chrUn:1-10"],
                  [[1, 2, 3, 9], [0, 5, 0, 0]])
    a = read_region_matrix(src, genome=genome, bin_size=5000)
    dense = pd.DataFrame(a.X.toarray(), index=a.obs_names, columns=a.var_names)
    assert dense.loc["c1", "chr1:0-5000"] == 1 and dense.loc["c1", "chr1:5000-10000"] == 2
    assert dense.loc["c1", "chr2:0-5000"] == 3 and dense.values.sum() == 11
    assert a.uns["ingest"]["n_regions_unknown_contig"] == 1 and a.X.dtype == np.int32


@pytest.mark.parametrize("values,problem", [([[1.5, 0], [0, 1]], "integers"), ([[-1, 0], [0, 1]], "non-negative")])
def test_bad_matrix_counts(genome, values, problem):
    with pytest.raises(ValueError, match=problem):
        read_region_matrix(_matrix(["chr1:1-100", "chr2:1-100"], values), genome=genome)


def test_matrix_on_wrong_genome_is_a_clear_error(genome):
    with pytest.raises(ValueError, match="hg19 vs hg38"):
        read_region_matrix(_matrix(["GL000220.1:1-100", "KI270442.1:1-100"], [[1, 0], [0, 1]]), genome=genome)


def test_shipped_hemato_peak_matrix_rebinned():
    src = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    a = read(data_path("hemato_10x_hg19.h5ad"), genome="hg19")
    assert a.shape == (600, get_genome("hg19").bins(5000).n_bins)
    assert a.X.sum() == src.X.sum()  # every peak is on chr1–22/X of hg19
    np.testing.assert_array_equal(np.asarray(a.X.sum(axis=1)).ravel(), np.asarray(src.X.sum(axis=1)).ravel())
    assert list(a.obs["cell_type"]) == list(src.obs["cell_type"]) and a.uns["genome"] == "hg19"


def test_shipped_multiome_atac_with_chr_column():
    src = ad.read_h5ad(data_path("pbmc_multiome_subset_grch38_atac.h5ad"))
    assert "chr" in src.var.columns and "chrom" not in src.var.columns
    a = read_region_matrix(data_path("pbmc_multiome_subset_grch38_atac.h5ad"), genome="hg38")
    assert a.n_obs == 100 and a.X.sum() == int(src.X.sum())
    assert a.uns["ingest"]["n_regions_used"] == 200


def test_10x_h5_and_matrix_market_folder(tmp_path, genome):
    X = np.array([[1, 0, 2], [0, 3, 0]])  # cells × peaks
    peaks = [("chr1", 100, 200), ("chr1", 6000, 6100), ("chr2", 10, 90)]
    h5 = tmp_path / "filtered_peak_bc_matrix.h5"
    csc = sp.csc_matrix(X.T)  # 10x stores peaks × barcodes
    with h5py.File(h5, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = csc.data, csc.indices, csc.indptr
        g["shape"] = np.array(csc.shape)
        g["barcodes"] = np.array([b"AAA-1", b"CCC-1"])
        g.create_group("features")["id"] = np.array([f"{c}:{s}-{e}".encode() for c, s, e in peaks])
    mtx = tmp_path / "mtx"
    mtx.mkdir()
    scipy.io.mmwrite(mtx / "matrix.mtx", sp.coo_matrix(X.T))
    (mtx / "barcodes.tsv").write_text("AAA-1\nCCC-1\n")
    with gzip.open(mtx / "peaks.bed.gz", "wt") as fh:
        fh.write("".join(f"{c}\t{s}\t{e}\n" for c, s, e in peaks))
    for src in (h5, mtx):
        assert detect_kind(src) == "matrix"
        a = read(src, genome=genome, bin_size=5000)
        assert list(a.obs_names) == ["AAA-1", "CCC-1"]
        dense = pd.DataFrame(a.X.toarray(), index=a.obs_names, columns=a.var_names)
        assert dense.loc["AAA-1", "chr1:0-5000"] == 1 and dense.loc["AAA-1", "chr2:0-5000"] == 2
        assert dense.loc["CCC-1", "chr1:5000-10000"] == 3


def test_bed_and_narrowpeak_one_row_per_file(tmp_path, genome):
    bed = tmp_path / "tcell.bed"
    bed.write_text("track name=x\nchr1\t100\t300\tp1\nchr1\t4900\t5030\tp2\nchrY\t1\t50\tp3\n")
    npk = tmp_path / "bcell.narrowPeak"  # summit at start + 4900 -> bin 1 although the midpoint is in bin 0
    npk.write_text("chr1\t100\t5100\tp\t0\t.\t1\t1\t1\t4900\n")
    table = tmp_path / "samples.tsv"
    table.write_text("sample\tcell_type\ntcell\tT\nbcell\tB\n")
    assert detect_kind(bed) == "bed" and detect_kind(npk) == "bed"
    a = read([bed, npk], genome=genome, sample_table=table)
    assert list(a.obs_names) == ["tcell", "bcell"] and list(a.obs["cell_type"]) == ["T", "B"]
    dense = pd.DataFrame(a.X.toarray(), index=a.obs_names, columns=a.var_names)
    assert dense.loc["tcell", "chr1:0-5000"] == 2 and dense.loc["tcell"].sum() == 2
    assert dense.loc["bcell", "chr1:5000-10000"] == 1
    broken = tmp_path / "broken.bed"
    broken.write_text("chr1\t100\t300\nchr1\tabc\t300\n")
    with pytest.raises(ValueError, match=r"broken\.bed, line 2"):
        read_bed(broken, genome=genome)
