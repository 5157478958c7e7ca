"""atacformer.datasets: the shipped example data as AnnData / paths, checked against the documented facts
(ATTRIBUTION.md) and against the raw files they are built from."""

import anndata as ad
import numpy as np
import pytest

import atacformer as af
from atacformer import datasets
from atacformer.genome import get_genome


def test_lazy_attribute():
    assert af.datasets is datasets


def test_hemato_binned_matches_peak_matrix():
    adata = datasets.hemato()
    peaks = datasets.hemato(bin_size=None)
    assert peaks.shape == (600, 5000)
    assert adata.shape == (600, get_genome("hg19").bins(5000).n_bins)
    assert adata.uns["genome"] == "hg19" and adata.uns["bin_size"] == 5000
    assert adata.X.dtype == np.int32
    # re-binning keeps every count of every cell, in the same cell order
    np.testing.assert_array_equal(np.asarray(adata.X.sum(1)).ravel(), np.asarray(peaks.X.sum(1)).ravel())
    assert list(adata.obs_names) == list(peaks.obs_names)
    assert adata.obs["cell_type"].value_counts().to_dict() == dict.fromkeys(
        ["01_HSC", "05_CMP.LMPP", "07_GMP", "15_CLP.2", "17_B", "19_CD8.N"], 100)
    assert adata.obs["donor"].value_counts().to_dict() == {"BMMC_D6T1": 492, "BMMC_D5T1": 108}
    # one peak's counts land in the bin that holds its midpoint
    j = 0
    mid = (int(peaks.var["start"].iloc[j]) + int(peaks.var["end"].iloc[j])) // 2
    b = np.flatnonzero((adata.var["chrom"] == peaks.var["chrom"].iloc[j]).to_numpy()
                       & (adata.var["start"].to_numpy() <= mid) & (mid < adata.var["end"].to_numpy()))
    assert len(b) == 1
    assert (adata.X[:, b[0]].toarray().ravel() >= peaks.X[:, j].toarray().ravel()).all()


def test_hemato_bin_size_option():
    adata = datasets.hemato(bin_size=50_000)
    assert adata.uns["bin_size"] == 50_000 and adata.n_vars == get_genome("hg19").bins(50_000).n_bins


def test_calls_return_independent_objects():
    a, b = datasets.hemato(bin_size=None), datasets.hemato(bin_size=None)
    a.obs["cell_type"] = "x"
    assert (b.obs["cell_type"] != "x").all()


def test_pbsmall_paths_and_cells():
    frag, labels = datasets.pbsmall_fragments(), datasets.pbsmall_labels()
    assert frag.is_file() and frag.name.endswith(".tsv.gz") and frag.with_name(frag.name + ".tbi").is_file()
    assert labels.read_text().splitlines()[0].split("\t") == ["barcode", "cell_type"]
    adata = datasets.pbsmall()
    assert adata.shape[0] == 150 and adata.uns["genome"] == "hg19"
    assert adata.obs["cell_type"].value_counts().to_dict() == {"B": 50, "Monocyte": 50, "T": 50}
    # two Tn5 insertions per unique fragment, all on chr5 / chr11 (the file has 29,399 fragments)
    assert int(adata.X.sum()) == 2 * int(adata.obs["n_main"].sum())
    open_chroms = set(adata.var["chrom"].to_numpy()[np.unique(adata.X.nonzero()[1])])
    assert open_chroms == {"chr5", "chr11"}


def test_demo_cells_is_both_datasets():
    cells = datasets.demo_cells()
    assert cells.obs["dataset"].value_counts().to_dict() == {"hemato": 600, "pbsmall": 150}
    assert cells.obs["cell_type"].notna().all() and cells.obs["cell_type"].nunique() == 9
    assert cells.uns["genome"] == "hg19" and "ingest" not in cells.uns
    hem = datasets.hemato()
    part = cells[cells.obs["dataset"] == "hemato"]
    assert list(part.obs_names) == [f"{n}-hemato" for n in hem.obs_names]
    assert (part.X != hem.X).nnz == 0


def test_pbmc_multiome_paired():
    atac, rna = datasets.pbmc_multiome()
    raw, _ = datasets.pbmc_multiome(bin_size=None)
    assert atac.shape[0] == rna.shape[0] == raw.shape[0] == 100 and rna.n_vars == 200 and raw.n_vars == 200
    assert atac.uns["genome"] == "hg38" and atac.n_vars == get_genome("hg38").bins(5000).n_bins
    strip = lambda names, sfx: [n.removesuffix(sfx) for n in names]  # noqa: E731
    assert strip(atac.obs_names, "_atac") == strip(rna.obs_names, "_rna")
    assert list(atac.obs["celltype"]) == list(rna.obs["celltype"])
    np.testing.assert_array_equal(np.asarray(atac.X.sum(1)).ravel(), np.asarray(raw.X.sum(1)).ravel())
    assert isinstance(rna, ad.AnnData) and rna.var["gene_ids"].str.startswith("ENSG").all()


def test_missing_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "data_path", lambda *parts: tmp_path.joinpath(*parts))
    with pytest.raises(FileNotFoundError, match="hemato_10x_hg19.h5ad.*reinstall"):
        datasets.hemato()
