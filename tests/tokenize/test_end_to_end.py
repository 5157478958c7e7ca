import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from atacformer.cli import main
from atacformer.genome import data_path, get_genome
from atacformer.tokenize import Corpus, CorpusDataset, write_corpus


def _rebin_hemato():
    """The shipped hemato peak matrix on hg19 5 kb bins (each peak's counts go to its midpoint's bin)."""
    peaks = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    bins = get_genome("hg19").bins(5000)
    chrom = np.array([bins.genome.chrom_index(c) if bins.genome.chrom_index(c) is not None else -1
                      for c in peaks.var["chrom"].astype(str)])
    ok = np.flatnonzero(chrom >= 0)
    mid = (peaks.var["start"].to_numpy() + peaks.var["end"].to_numpy()) // 2
    to_bin = sp.csr_matrix((np.ones(len(ok), np.int32), (ok, bins.bin_ids(chrom[ok], mid[ok]))),
                           shape=(peaks.n_vars, bins.n_bins))
    X = sp.csr_matrix(peaks.X) @ to_bin
    return ad.AnnData(X.tocsr(), obs=peaks.obs[["cell_type", "donor"]].copy(), var=bins.var(), uns=bins.uns())


@pytest.fixture(scope="module")
def hemato_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("hemato") / "hemato.h5ad"
    _rebin_hemato().write_h5ad(path)
    return path


def test_hemato_end_to_end(hemato_h5ad, tmp_path):
    adata = ad.read_h5ad(hemato_h5ad)
    info = write_corpus([hemato_h5ad], tmp_path / "c", obs_columns=("cell_type", "donor"), cells_per_shard=256,
                        row_group_size=128, progress=False)
    assert info.n_cells == 600 and [s.n_rows for s in info.shards] == [256, 256, 88]
    assert info.genome == "hg19" and info.labels["cell_type"] == sorted(adata.obs["cell_type"].unique())
    X = adata.X.tocsr()
    by_id = {c["cell_id"]: c for c in CorpusDataset(tmp_path / "c", rank=0, world_size=1)}
    assert len(by_id) == 600
    for i in (0, 299, 599):
        c = by_id[adata.obs_names[i]]
        assert np.array_equal(c["bin_ids"], np.sort(X.indices[X.indptr[i]:X.indptr[i + 1]]))  # file: unsorted
        assert info.labels["cell_type"][c["cell_type"]] == adata.obs["cell_type"].iloc[i]
    assert info.median_n_open == np.median(np.diff(X.indptr))


def test_cli_tokenize(hemato_h5ad, tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["tokenize", str(hemato_h5ad), str(hemato_h5ad), "-o", str(out), "--cells-per-shard", "500",
            "--row-group-size", "250", "--obs-columns", "cell_type,donor,organ"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "1200 cells in 3 shards (hg19, 5000 bp bins)" in text
    assert "dataset hemato: 600 cells" in text and "dataset hemato_2: 600 cells" in text
    corpus = Corpus(out)
    assert len(corpus) == 1200 and corpus.obs_columns == ("dataset", "cell_type", "donor")
    assert f"median sentence length {corpus.info.median_sentence_length:g}" in text
    assert main(argv) == 2  # exists: refused, old corpus kept
    assert "already exists" in capsys.readouterr().err and len(Corpus(out)) == 1200


def test_fragment_input(tmp_path):
    io = pytest.importorskip("atacformer.io")
    if not hasattr(io, "read_fragments"):
        pytest.skip("atacformer.io.read_fragments not built yet")
    frags = data_path("pbsmall_fragments_hg19.tsv.gz")
    info = write_corpus([frags], tmp_path / "c", genome="hg19", progress=False)
    adata = io.read_fragments([frags], genome="hg19", bin_size=5000)
    assert info.n_cells == adata.n_obs > 0 and info.datasets == {"pbsmall_fragments_hg19": adata.n_obs}
    X = adata.X.tocsr()
    first = next(iter(CorpusDataset(tmp_path / "c", shuffle=False)))
    assert first["cell_id"] == adata.obs_names[0]
    assert np.array_equal(first["bin_ids"], np.sort(X.indices[X.indptr[0]:X.indptr[1]]))
