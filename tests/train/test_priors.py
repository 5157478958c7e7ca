"""Data-derived priors of pretraining: open-bin counts, balanced state weights, neighbour graphs,
SVD initialisation of E1, and how ``pretrain`` applies them (observed decoder bins, saved and resumed)."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from atacformer.models import Atacformer, AtacformerConfig
from atacformer.tokenize import Corpus, write_corpus
from atacformer.train import AtacformerDataModule, DataSettings, PretrainRecipe
from atacformer.train.pretrain import build_config, init_from_data
from atacformer.train.priors import (
    balanced_state_weights,
    bin_open_counts,
    cell_neighbors,
    svd_bin_embeddings,
)

FAST = dict(preset="tiny", log_every_n_steps=1, progress_bar=False, warmup_steps=2, lr=2e-3, val_fraction=0.0)


def _kind(adata) -> np.ndarray:
    return adata.obs["cell_type"].cat.codes.to_numpy()


def test_open_counts_from_matrix_and_corpus_agree(tmp_path, make_toy):
    adata = make_toy(30, seed=3)
    dense = (adata.X.toarray() > 0).sum(0)
    counts, n = bin_open_counts(adata.X, n_bins=adata.n_vars)
    assert n == 30 and np.array_equal(counts, dense)
    write_corpus(adata, tmp_path / "c", cells_per_shard=12, row_group_size=6, progress=False)
    counts2, n2 = bin_open_counts(corpora=[Corpus(tmp_path / "c")], n_bins=adata.n_vars)
    assert n2 == 30 and np.array_equal(counts2, dense)


def test_balanced_weights_equalise_closed_and_open_pairs():
    assert balanced_state_weights(np.array([3, 0, 1, 4]), 5, 3) == (1.0, 1.0, 1.0)  # more open than closed: ≥ 1
    w = balanced_state_weights(np.array([1, 1]), 10, 2)  # 2 open, 18 closed pairs
    assert w == (1.0, 9.0, 9.0)
    with pytest.raises(ValueError, match="open"):
        balanced_state_weights(np.zeros(3), 4, 3)


@pytest.mark.parametrize("method", ["tfidf", "lsi", "spectral"])
def test_neighbors_are_mostly_the_same_type(make_toy, method):
    adata = make_toy(60, seed=1)
    idx = cell_neighbors(adata.X, 5, method=method, n_comps=8)
    kind = _kind(adata)
    assert idx.shape == (60, 5) and not (idx == np.arange(60)[:, None]).any()
    assert (kind[idx] == kind[:, None]).mean() > 0.9


def test_auto_weights_need_pretrain(make_toy):
    data = AtacformerDataModule(make_toy(10), data=DataSettings(batch_size=4, val_fraction=0.0))
    with pytest.raises(ValueError, match="resolved from the data"):
        AtacformerConfig.from_preset("tiny", data.vocab, state_class_weights="auto")


def test_unknown_neighbor_method_is_an_error(make_toy):
    with pytest.raises(ValueError, match="neighbour method"):
        cell_neighbors(make_toy(10).X, 3, method="umap")


def test_svd_bin_embeddings_shapes_scale_determinism_and_structure(make_toy):
    adata = make_toy(60, seed=2)
    X = sp.csr_matrix(adata.X)
    bins, vec = svd_bin_embeddings(X, 8, seed=0)
    bins2, vec2 = svd_bin_embeddings(X, 8, seed=0)
    assert np.array_equal(bins, np.flatnonzero((X.toarray() > 0).any(0))) and vec.shape == (len(bins), 8)
    assert np.array_equal(bins, bins2) and np.array_equal(vec, vec2)
    np.testing.assert_allclose(vec.std(0), 1.0, rtol=1e-4)
    # the two cell types open the two halves of the genome: bins of one half share a loading pattern
    half = (bins >= adata.n_vars // 2).astype(int)
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    nearest = np.argsort(-(unit @ unit.T), axis=1)[:, 1]
    assert (half[nearest] == half).mean() > 0.9


def test_pretrain_observed_decoder_auto_weights_and_svd_init(tmp_path, make_toy, run_pretrain, recipe_of):
    adata = make_toy(40, seed=4)
    adata.X[:, 5] = 0  # a bin never open → not a decoder target
    adata.X.eliminate_zeros()
    opts = dict(decoder_bins="observed", e1_init="svd", dropout=0.0)
    data = AtacformerDataModule(adata, data=DataSettings(batch_size=8, val_fraction=0.0))
    config = build_config(data, recipe_of(overrides=opts))
    counts, n = bin_open_counts(adata.X, n_bins=adata.n_vars)
    assert config.n_decoder_bins == int((counts > 0).sum()) < adata.n_vars
    assert config.state_class_weights == balanced_state_weights(counts, n, config.n_decoder_bins)
    model = Atacformer(config)
    init_from_data(model, data, recipe_of(overrides=opts))
    assert model.decoder.bins.tolist() == np.flatnonzero(counts > 0).tolist()
    bins, vec = svd_bin_embeddings(adata.X, config.k, seed=0)
    torch.testing.assert_close(model.encoder.embed.e1.weight[model.bin_offset + torch.from_numpy(bins)],
                               torch.from_numpy(vec))

    out = tmp_path / "m"
    trained = run_pretrain(adata, out_dir=out, max_steps=4, batch_size=8, ckpt_every_n_steps=2, overrides=opts, **FAST)
    saved = json.loads((out / "config.json").read_text())
    assert saved["decoder_bins"] == "observed" and saved["n_decoder_bins"] == config.n_decoder_bins
    loaded = Atacformer.from_pretrained(out)
    assert torch.equal(loaded.decoder.bins, trained.decoder.bins) and 5 not in loaded.decoder.bins.tolist()
    resumed = run_pretrain(adata, out_dir=tmp_path / "r", resume=out / "checkpoints" / "step=2.ckpt", max_steps=4,
                       batch_size=8, overrides=opts, **FAST)
    assert torch.equal(resumed.decoder.bins, trained.decoder.bins)
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)


def test_the_default_recipe_is_the_measured_one_and_overrides_win(tmp_path, make_toy):
    adata = make_toy(24, seed=1)
    r = PretrainRecipe()
    assert ((r.e1_init, r.contrastive_neighbors, r.batch.contrastive_drop, r.batch.neighbor_add)
            == ("svd", "spectral", 0.8, 1.0))
    config = build_config(AtacformerDataModule(adata, data=DataSettings(batch_size=8, val_fraction=0.0)), r)
    assert config.decoder_bins == "observed" and config.contrastive_weight == 5.0 and config.dropout == 0.0
    plain = build_config(AtacformerDataModule(adata, data=DataSettings(batch_size=8, val_fraction=0.0)),
                         PretrainRecipe.masked_only())
    assert plain.contrastive_weight == 0.0 and plain.decoder_bins == "all" and plain.dropout == 0.1  # preset's
    write_corpus(adata, tmp_path / "c", cells_per_shard=12, row_group_size=6, progress=False)
    streamed = build_config(AtacformerDataModule([tmp_path / "c"], data=DataSettings(max_tokens=512)), r)
    assert streamed.contrastive_weight == 5.0 and streamed.decoder_bins == "observed"  # one recipe for both inputs


def test_pretrain_lr_defaults_to_the_presets(tmp_path, make_toy, run_pretrain):
    from atacformer.train import read_metrics

    run_pretrain(make_toy(16), out_dir=tmp_path / "m", max_steps=2, batch_size=8, warmup_steps=1, ckpt_every_n_steps=10,
             log_every_n_steps=1, progress_bar=False, val_fraction=0.0)
    assert read_metrics(tmp_path / "m" / "logs")["train/lr"].dropna().max() == pytest.approx(1e-2)


def test_closed_bins_are_sampled_only_past_the_budget(make_toy):
    data = AtacformerDataModule(make_toy(24, seed=2), data=DataSettings(batch_size=8, val_fraction=0.0))
    exact = build_config(data, PretrainRecipe())  # 200 toy bins, far below the 20,000 budget
    assert exact.state0_sample_rate is None
    sampled = build_config(data, PretrainRecipe(closed_bins_per_cell=50))
    assert sampled.state0_sample_rate == pytest.approx(50 / sampled.n_decoder_bins)
    mine = build_config(data, PretrainRecipe(closed_bins_per_cell=50, model={"state0_sample_rate": 0.5}))
    assert mine.state0_sample_rate == 0.5  # an explicit rate wins
