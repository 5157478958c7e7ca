"""``batch_key``: pretraining batches that hold one sample/dataset each, neighbours found within it."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.genome import Genome
from atacformer.train import AtacformerDataModule, BatchSettings, DataSettings, PretrainRecipe, read_metrics
from atacformer.train.pretrain import set_view_neighbors
from atacformer.train.priors import cell_neighbors, group_mixing, grouped_neighbors, separated_groups
from atacformer.train.stream import group_cells

from .conftest import TOY_SIZES, binned_adata


def _two_datasets(n_a: int = 30, n_b: int = 18, seed: int = 0):
    """Dataset "a" opens only bins of chr1, dataset "b" only bins of chr2 (no overlap)."""
    bins = Genome.from_chrom_sizes(TOY_SIZES, name="toy").bins(5000)
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    X = np.zeros((n, bins.n_bins), dtype=np.float32)
    X[:n_a, :120] = rng.random((n_a, 120)) < 0.3
    X[n_a:, 120:] = rng.random((n_b, 80)) < 0.3
    obs = pd.DataFrame({"dataset": ["a"] * n_a + ["b"] * n_b}, index=[f"c{i}" for i in range(n)])
    return binned_adata(sp.csr_matrix(X), bins, obs)


def test_group_cells_ends_a_batch_when_the_group_changes():
    cells = [{"bin_ids": np.arange(3), "group": g} for g in [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]]
    sizes = [[c["group"] for c in b] for b in group_cells(iter(cells), n_chroms=1, max_length=50, max_tokens=None,
                                                          batch_size=4)]
    assert sizes == [[0, 0, 0], [1, 1], [0, 0, 0, 0], [0]]


def test_grouped_neighbors_stay_in_their_group_and_fill_k_columns():
    adata = _two_datasets(30, 3)
    groups = np.r_[np.zeros(30, int), np.ones(3, int)]
    groups_with_single = np.r_[groups[:-1], 2]  # the last cell alone in group 2
    nb = grouped_neighbors(adata.X, groups_with_single, 5, method="spectral")
    assert nb.shape == (33, 5)
    assert (groups_with_single[nb] == groups_with_single[:, None]).all()
    assert (nb[:30] != np.arange(30)[:, None]).all()  # not itself when the group is large enough
    assert set(nb[30]) == {31} and set(nb[31]) == {30}  # a pair: each other, repeated to 5 columns
    assert (nb[32] == 32).all()  # alone: itself


def test_every_batch_holds_one_dataset_and_an_epoch_covers_every_cell():
    adata = _two_datasets()
    dm = AtacformerDataModule(adata, data=DataSettings(batch_size=4, val_fraction=0.0, batch_key="dataset"), seed=2)
    dm.batch = BatchSettings(contrastive_drop=0.5, neighbor_add=1.0)
    set_view_neighbors(dm, PretrainRecipe(contrastive_neighbors="tfidf"))
    first_chr2 = dm.vocab.bin_offset + 120
    kinds = []
    for _, batch in zip(range(24), dm.train_dataloader(), strict=False):
        bins = batch.input_ids[batch.input_ids >= dm.vocab.bin_offset]
        kinds.append({"a" if (bins < first_chr2).all() else "b" if (bins >= first_chr2).all() else "mixed"})
    assert all(len(k) == 1 and "mixed" not in k for k in kinds)  # views too: neighbours are from the same dataset
    assert {"a"} in kinds and {"b"} in kinds
    source = dm._source(train=True)
    for epoch in range(2):
        assert sorted(c["row"] for c in source(epoch)) == list(range(adata.n_obs))
    # without batch_key batches mix
    mixed = AtacformerDataModule(adata, data=DataSettings(batch_size=4, val_fraction=0.0), seed=2)
    assert any(len(set(b.input_ids[b.input_ids >= mixed.vocab.bin_offset].ge(first_chr2).tolist())) == 2
               for _, b in zip(range(12), mixed.train_dataloader(), strict=False))


def test_batch_key_errors():
    adata = _two_datasets()
    with pytest.raises(ValueError, match="'donor' is not an obs column"):
        AtacformerDataModule(adata, data=DataSettings(batch_key="donor"))
    adata.obs.loc["c0", "dataset"] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        AtacformerDataModule(adata, data=DataSettings(batch_key="dataset"))


def test_pretrain_with_batch_key_trains_and_resumes_exactly(tmp_path, one_thread, run_pretrain):
    adata = _two_datasets()
    kw = {"preset": "tiny", "log_every_n_steps": 1, "progress_bar": False, "warmup_steps": 2, "lr": 2e-3,
          "max_steps": 4, "ckpt_every_n_steps": 2, "batch_size": 8, "val_fraction": 0.0, "batch_key": "dataset",
          "overrides": {"contrastive_weight": 1.0, "contrastive_neighbor_add": 0.5}}
    run_pretrain(adata, out_dir=tmp_path / "full", **kw)
    run_pretrain(adata, out_dir=tmp_path / "res", resume=tmp_path / "full" / "checkpoints" / "step=2.ckpt", **kw)
    a, b = read_metrics(tmp_path / "full" / "logs"), read_metrics(tmp_path / "res" / "logs")
    np.testing.assert_array_equal(a[a["step"] >= 2]["train/loss"].to_numpy(), b["train/loss"].to_numpy())


def _mixed_and_apart(seed: int = 0):
    """Groups "big" (40 cells) and "small" (6) draw types A/B from the same bins (no batch effect); group
    "apart" (20) opens other bins altogether (a batch effect the kNN graph cannot miss)."""
    rng = np.random.default_rng(seed)
    groups = np.array(["big"] * 40 + ["small"] * 6 + ["apart"] * 20)
    kind = np.r_[np.arange(40) % 2, np.arange(6) % 2, np.arange(20) % 2]
    X = (rng.random((66, 200)) < 0.03).astype(np.float32)
    for i, (g, t) in enumerate(zip(groups, kind, strict=True)):
        start = (120 if g == "apart" else 0) + 40 * t
        X[i, start:start + 40] = rng.random(40) < 0.5
    return sp.csr_matrix(X), groups, kind


def test_groups_search_within_themselves_only_where_the_graph_keeps_them_apart():
    X, groups, kind = _mixed_and_apart()
    everyone = cell_neighbors(X, 5, method="tfidf")
    mixing = group_mixing(everyone, groups)
    assert mixing["apart"] == 0.0 and mixing["big"] > 0.5 and mixing["small"] > 0.5
    assert separated_groups(everyone, groups) == ["apart"]
    within = grouped_neighbors(X, groups, 5, method="tfidf")
    auto = grouped_neighbors(X, groups, 5, method="tfidf", within=["apart"])
    small, apart = groups == "small", groups == "apart"
    assert (groups[within[small]] == "small").all()  # 6 cells of 2 types: the 5 neighbours cross types
    assert (kind[within[small]] != kind[small][:, None]).mean() > 0.3
    assert (groups[auto[small]] == "big").mean() > 0.5  # pooled: the small group borrows from the big one,
    assert (kind[auto[small]] == kind[small][:, None]).mean() > 0.9  # from the same type
    assert (groups[auto[apart]] == "apart").all() and (auto[apart] == within[apart]).all()
    assert not (auto == np.arange(66)[:, None]).any()
    assert (grouped_neighbors(X, groups, 5, method="tfidf", within=[]) == everyone).all()


def _module(X, groups, scope):
    obs = pd.DataFrame({"sample": groups}, index=[f"c{i}" for i in range(X.shape[0])])
    bins = Genome.from_chrom_sizes(TOY_SIZES, name="toy").bins(5000)
    adata = binned_adata(sp.hstack([X, sp.csr_matrix((X.shape[0], bins.n_bins - X.shape[1]))]).tocsr(), bins, obs)
    dm = AtacformerDataModule(adata, data=DataSettings(batch_size=4, val_fraction=0.0, batch_key="sample"), seed=0)
    dm.batch = BatchSettings(contrastive_drop=0.5, neighbor_add=1.0)
    set_view_neighbors(dm, PretrainRecipe(contrastive_neighbors="tfidf", n_neighbors=5, neighbor_scope=scope))
    return dm


def test_auto_scope_keeps_batches_by_sample_only_while_a_sample_stands_apart():
    X, groups, _ = _mixed_and_apart()
    dm = _module(X, groups, "auto")
    assert dm.groups is not None  # "apart" stands apart: batches still hold one sample
    codes = dm.groups
    table = dm.neighbors.table
    assert (codes[table[groups == "apart"]] == codes[groups == "apart"][0]).all()
    assert (groups[table[groups == "small"]] == "big").mean() > 0.5
    mixed = groups != "apart"
    dm = _module(X[mixed], groups[mixed], "auto")
    assert dm.groups is None  # no sample stands apart: nothing for one-sample batches to correct
    assert (dm.neighbors.table == cell_neighbors(X[mixed], 5, method="tfidf")).all()
    dm = _module(X[mixed], groups[mixed], "group")
    assert dm.groups is not None and (groups[mixed][dm.neighbors.table[groups[mixed] == "small"]] == "small").all()
    with pytest.raises(ValueError, match="neighbor_scope"):
        PretrainRecipe(neighbor_scope="batch")
