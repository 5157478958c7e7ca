"""The fine-tuning/annotation options: depth augmentation, dropout override, class weights, layer-wise
learning rates and kNN mixing."""

import numpy as np
import pytest
import torch
from torch import nn

from atacformer.metrics import macro_f1
from atacformer.tl import annotate, finetune
from atacformer.tl._torch import batches, cell_dicts, dropout_rate, subsample
from atacformer.tl.annotate import _class_weights, _param_groups, knn_probs

from .conftest import toy_adata, toy_model


def test_subsample_keeps_a_random_share_of_the_bins():
    rng = np.random.default_rng(0)
    cell = {"bin_ids": np.arange(100, 200)}
    shares = [len(subsample(cell, (0.3, 0.6), rng)["bin_ids"]) / 100 for _ in range(50)]
    assert 0.29 <= min(shares) and max(shares) <= 0.61 and max(shares) - min(shares) > 0.1
    kept = subsample(cell, (0.3, 0.6), rng)["bin_ids"]
    assert np.isin(kept, cell["bin_ids"]).all() and np.all(np.diff(kept) > 0)
    assert len(subsample({"bin_ids": np.array([7])}, (0.0, 0.0), rng)["bin_ids"]) == 1  # never empty


def test_batches_with_keep_shorten_sentences(adata, model):
    cells = cell_dicts(adata, model)
    full = sum(int(b.attention_mask.sum()) for _, b in batches(cells, model, batch_size=30))
    half = sum(int(b.attention_mask.sum()) for _, b in batches(cells, model, batch_size=30, keep=(0.5, 0.5)))
    n_bins = sum(len(c["bin_ids"]) for c in cells)
    assert full - half == pytest.approx(n_bins / 2, rel=0.05)


def test_dropout_rate_is_set_then_restored(model):
    with dropout_rate(model, 0.3):
        ps = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
        assert ps and all(p == 0.3 for p in ps)
        assert model.encoder.layers[0].attn.dropout == 0.3
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert model.encoder.layers[0].attn.dropout == 0.0
    with pytest.raises(ValueError, match="dropout"), dropout_rate(model, 1.0):
        pass


def test_balanced_class_weights_equalise_classes():
    codes = np.array([0] * 30 + [1] * 10 + [2] * 20 + [-1] * 5)
    w = _class_weights(codes, 3, "balanced").numpy()
    counts = np.bincount(codes[codes >= 0])
    np.testing.assert_allclose(w * counts, 60 / 3)
    assert _class_weights(codes, 3, None) is None
    with pytest.raises(ValueError, match="class_weight"):
        _class_weights(codes, 3, "inverse")


def test_layerwise_learning_rates(model):
    from atacformer.tl._torch import freeze

    freeze(model, train_embeddings=True)
    head = nn.Linear(2, 2)
    groups = _param_groups(model, [head], lr=1.0, body_lr=0.1, layer_decay=0.5, embedding_lr=None, decoder=False)
    lr_of = {id(p): (g["lr"], g.get("weight_decay")) for g in groups for p in g["params"]}
    top, bottom = model.encoder.layers[-1], model.encoder.layers[0]  # tiny preset: 2 layers
    assert lr_of[id(head.weight)][0] == 1.0
    assert lr_of[id(top.ff1.weight)][0] == pytest.approx(0.1)
    assert lr_of[id(bottom.ff1.weight)][0] == pytest.approx(0.05)
    assert lr_of[id(model.encoder.embed.e1.weight)] == (pytest.approx(0.025), 0.0)  # no decay on the table
    assert not any(id(p) in lr_of for p in model.decoder.parameters())
    freeze(model, trainable_last_layers=1)
    groups = _param_groups(model, [head], lr=1.0, body_lr=0.1, layer_decay=1.0, embedding_lr=0.3, decoder=True)
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(model.encoder.embed.e1.weight) not in ids and id(bottom.ff1.weight) not in ids
    assert all(id(p) in ids for p in model.decoder.parameters())


def test_knn_probs_are_neighbour_label_shares():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    codes = np.array([0, 0, 1, 1, -1])  # the last reference cell has no label: ignored
    p = knn_probs(ref, codes, np.array([[2.0, 0.1], [0.0, 3.0]]), 3, k=3)
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0]])


def test_finetune_options_then_annotate_with_reference(adata, model):
    finetune(adata, model, epochs=8, patience=8, class_weight="balanced", keep=(0.6, 1.0), dropout=0.1,
             body_lr=3e-4, layer_decay=0.8, state_loss_weight=0.5, seed=0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))  # restored
    hist = adata.uns["atacformer_finetune"]["history"]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    query = toy_adata(seed=7)
    annotate(query, model, threshold=0.0, reference=adata, knn_weight=1.0, k=5, key_added="knn")
    probs = query.obsm["knn_probs"]
    np.testing.assert_allclose(np.round(probs * 5), probs * 5, atol=1e-5)  # pure shares of 5 neighbours
    assert macro_f1(query.obs["cell_type"], query.obs["knn"]) > 0.7  # chance: 0.33
    annotate(query, model, threshold=0.0, key_added="head")
    annotate(query, model, threshold=0.0, reference=adata, knn_weight=0.5, k=5)
    assert query.uns["atacformer_label"]["knn_weight"] == 0.5 and query.uns["head"]["knn_weight"] == 0.0
    mixed = 0.5 * query.obsm["head_probs"] + 0.5 * probs
    np.testing.assert_allclose(query.obsm["atacformer_label_probs"], mixed, atol=1e-5)
    with pytest.raises(ValueError, match="knn_weight"):
        annotate(query, model, reference=adata, knn_weight=1.5)
    with pytest.raises(ValueError, match="no 'missing'"):
        annotate(query, model, reference=adata, labels_key="missing")


def test_head_only_finetune_leaves_the_encoder(adata):
    model = toy_model()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    finetune(adata, model, trainable_layers=0, epochs=2, patience=2)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_early_stopping_on_validation_macro_f1(adata, model):
    finetune(adata, model, epochs=6, patience=6, monitor="macro_f1", seed=1)
    info = adata.uns["atacformer_finetune"]
    hist = info["history"]
    best = hist["val_macro_f1"].max()
    tied = hist[hist["val_macro_f1"] >= best - 1e-4]
    assert info["monitor"] == "macro_f1" and info["best_epoch"] == tied["val_loss"].idxmin()
    assert info["best_val_loss"] == pytest.approx(hist["val_loss"][info["best_epoch"]])
    finetune(adata, toy_model(), epochs=3, patience=3)
    assert adata.uns["atacformer_finetune"]["best_epoch"] == adata.uns["atacformer_finetune"]["history"]["val_loss"].idxmin()
    with pytest.raises(ValueError, match="monitor"):
        finetune(adata, model, monitor="accuracy")
