"""``tl.embed``: batched cell embeddings written to obsm/uns, and genome checks."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from atacformer.genome import Genome
from atacformer.models import Atacformer, AtacformerConfig, collate_cells
from atacformer.tl import annotate, map_query
from atacformer.tl.embed import embed
from atacformer.tokenize import AnnDataCellDataset, BinVocab
from atacformer.train import encode_cells
from atacformer.train.batcher import adata_cells, cell_rng


def _cells(genome: Genome, n: int = 13, seed: int = 0) -> ad.AnnData:
    bins = genome.bins(5000)
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((rng.random((n, bins.n_bins)) < 0.2).astype(np.float32))
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]), var=bins.var(), uns=bins.uns())


@pytest.fixture()
def toy_genome():
    return Genome.from_chrom_sizes({"chr1": 300_000, "chr2": 200_000}, name="toy")


@pytest.fixture()
def model(toy_genome):
    torch.manual_seed(0)
    config = AtacformerConfig.from_preset("tiny", BinVocab(toy_genome), dropout=0.0)
    return Atacformer(config)


def test_embed_writes_obsm_and_is_batch_invariant(toy_genome, model):
    adata = _cells(toy_genome)
    embed(adata, model, batch_size=4, progress=False)
    emb = adata.obsm["X_atacformer"]
    assert emb.shape == (13, 32) and emb.dtype == np.float32
    assert adata.uns["X_atacformer"]["pooling"] == "cls" and adata.uns["X_atacformer"]["genome"] == "toy"
    # packed batches: a cell's embedding does not depend on its batch mates
    other = adata.copy()
    embed(other, model, batch_size=13, key_added="X_one", progress=False)
    np.testing.assert_allclose(other.obsm["X_one"], emb, atol=1e-5)
    # equals the model's own embed of the unmasked sentence
    cells = AnnDataCellDataset(adata, label_keys=())
    batch = collate_cells([cells[5]], model.vocab, mask_fraction=0.0)
    with torch.no_grad():
        np.testing.assert_allclose(model.embed(batch).numpy()[0], emb[5], atol=1e-5)
    embed(adata, model, pooling="mean", key_added="X_mean", progress=False)
    assert not np.allclose(adata.obsm["X_mean"], emb)
    assert model.training  # left as it was


def test_embed_from_model_dir(tmp_path, toy_genome, model):
    model.save_pretrained(tmp_path / "m")
    a, b = _cells(toy_genome), _cells(toy_genome)
    embed(a, tmp_path / "m", progress=False, device="cpu")
    embed(b, model, progress=False)
    np.testing.assert_allclose(a.obsm["X_atacformer"], b.obsm["X_atacformer"], atol=1e-6)
    assert a.uns["X_atacformer"]["model"] == str(tmp_path / "m")


def test_embed_rejects_other_genome_or_bin_size(toy_genome, model):
    other = Genome.from_chrom_sizes({"chr1": 300_000, "chr2": 200_000}, name="toy2")
    with pytest.raises(ValueError, match="genome 'toy2'"):
        embed(_cells(other), model, progress=False)
    wrong_bins = _cells(toy_genome)
    wrong_bins.uns["bin_size"] = 1000
    with pytest.raises(ValueError, match="1000 bp"):
        embed(wrong_bins, model, progress=False)
    no_uns = _cells(toy_genome)
    no_uns.uns.clear()
    with pytest.raises(ValueError, match="uns"):
        embed(no_uns, model, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        embed(_cells(toy_genome), model, pooling="max", progress=False)


def test_embed_copy_leaves_input(toy_genome, model):
    adata = _cells(toy_genome)
    out = embed(adata, model, progress=False, copy=True)
    assert "X_atacformer" not in adata.obsm and out.obsm["X_atacformer"].shape == (13, 32)
    with pytest.raises(ValueError, match="batch_size"):
        embed(adata, model, batch_size=0, progress=False)


def test_a_long_cell_gets_one_embedding_whichever_tool_embeds_it(toy_genome):
    """A cell longer than max_length is subsampled with a generator seeded by its own bins: alone or among
    other cells, through tl.embed, train.encode_cells, annotate and map_query, the same vector (bit for bit)."""
    torch.manual_seed(0)
    config = AtacformerConfig.from_preset("tiny", BinVocab(toy_genome), dropout=0.0, max_length=24, n_cell_types=2,
                                          cell_type_names=["x", "y"])
    model = Atacformer(config).eval()
    adata = _cells(toy_genome, n=9, seed=3)
    X = adata.X.tolil()
    X[4, :60] = 1.0  # 60 open bins > 24 - 1 - 2 tokens: this cell is subsampled
    adata.X = X.tocsr()
    assert adata.X[4].nnz > config.max_length
    adata.obs["cell_type"] = ["x", "y"] * 4 + ["x"]
    alone = adata[[4]].copy()
    embed(alone, model, progress=False)
    ref = alone.obsm["X_atacformer"][0]
    embed(adata, model, batch_size=9, progress=False)  # in one batch with eight others
    np.testing.assert_array_equal(adata.obsm["X_atacformer"][4], ref)
    embed(adata, model, batch_size=2, progress=False, key_added="X_b2")  # with another long-enough mate
    np.testing.assert_array_equal(adata.obsm["X_b2"][4], ref)
    emb, probs = encode_cells(model, adata_cells(adata, model), batch_size=5)
    np.testing.assert_array_equal(emb[4], ref)
    # annotate's head probabilities are encode_cells' (the mean over the long cell's subsets) ...
    annotate(alone, model, threshold=0.0)
    np.testing.assert_allclose(alone.obsm["atacformer_label_probs"][0], probs["cell_type"][4], atol=1e-6)
    # ... and with one subset, the head's softmax of that one vector
    one, probs1 = encode_cells(model, adata_cells(adata, model), n_subsets=1)
    assert np.abs(one[4] - ref).max() > 1e-4  # the default averaged several subsets
    with torch.no_grad():
        head = torch.softmax(model.cell_type_head(torch.from_numpy(one[4][None])), 1).numpy()[0]
    np.testing.assert_allclose(probs1["cell_type"][4], head, atol=1e-6)
    # map_query embeds the query (and a reference without obsm[use_rep]) the same way
    query = adata.copy()
    map_query(query, adata, model, n_neighbors=3, use_rep="X_mapped")
    np.testing.assert_array_equal(query.obsm["X_mapped"][4], ref)
    # the subsample matters: another seed draws other bins, so another vector
    embed(alone, model, progress=False, seed=1, key_added="X_seed1")
    assert np.abs(alone.obsm["X_seed1"][0] - ref).max() > 1e-3
    # and the generator depends on the cell's bins only (not on their order)
    bins = adata_cells(adata, model)[4]["bin_ids"]
    a, b = cell_rng(bins).integers(0, 10**9, 4), cell_rng(bins[::-1]).integers(0, 10**9, 4)
    np.testing.assert_array_equal(a, b)
