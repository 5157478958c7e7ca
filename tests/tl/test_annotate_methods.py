"""The fine-tuning/annotation options: depth augmentation, dropout override, class weights, layer-wise
learning rates and kNN mixing."""

import numpy as np
import pytest
import torch
from torch import nn

from atacformer.metrics import macro_f1
from atacformer.tl import annotate, finetune
from atacformer.tl.annotate import _class_weights, knn_probs
from atacformer.train import (
    BatchSettings,
    ClassifierPlan,
    FinetuneRecipe,
    OptimizerSettings,
)
from atacformer.train.batcher import adata_cells, subsample
from atacformer.train.tuning import dropout_rate, freeze

from .conftest import toy_adata, toy_model


def test_subsample_keeps_a_random_share_of_the_bins():
    rng = np.random.default_rng(0)
    cell = {"bin_ids": np.arange(100, 200)}
    shares = [len(subsample(cell, (0.3, 0.6), rng)["bin_ids"]) / 100 for _ in range(50)]
    assert 0.29 <= min(shares) and max(shares) <= 0.61 and max(shares) - min(shares) > 0.1
    kept = subsample(cell, (0.3, 0.6), rng)["bin_ids"]
    assert np.isin(kept, cell["bin_ids"]).all() and np.all(np.diff(kept) > 0)
    assert len(subsample({"bin_ids": np.array([7])}, (0.01, 0.01), rng)["bin_ids"]) == 1  # never empty


def test_batches_with_keep_shorten_sentences(adata, model):
    cells = adata_cells(adata, model)
    rng = np.random.default_rng(0)
    kw = {"max_length": model.config.max_length, "packed": True}
    full = BatchSettings(mask_fraction=0.0).collate(cells, model.vocab, rng, **kw).num_tokens
    half = BatchSettings(mask_fraction=0.0, keep=(0.5, 0.5)).collate(cells, model.vocab, rng, **kw).num_tokens
    n_bins = sum(len(c["bin_ids"]) for c in cells)
    assert full - half == pytest.approx(n_bins / 2, rel=0.05)
    with pytest.raises(ValueError, match="keep"):
        BatchSettings(keep=(0.0, 0.5))


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
        FinetuneRecipe(class_weight="inverse")


def test_layerwise_learning_rates():
    model = toy_model(n_cell_types=3)
    freeze(model, train_embeddings=True)
    model.decoder.requires_grad_(False)
    plan = ClassifierPlan(model, class_weights={"cell_type": None}, body_lr_ratio=0.1, layer_decay=0.5,
                          optimizer=OptimizerSettings(lr=1.0), max_steps=1)
    scale = {id(p): (g["lr_scale"], g["weight_decay"]) for g in plan.param_groups() for p in g["params"]}
    top, bottom = model.encoder.layers[-1], model.encoder.layers[0]  # tiny preset: 2 layers
    head = model.cell_type_head
    assert scale[id(next(head.parameters()))][0] == 1.0
    assert scale[id(top.ff1.weight)] == (pytest.approx(0.1), OptimizerSettings().weight_decay)
    assert scale[id(bottom.ff1.weight)][0] == pytest.approx(0.05)
    assert scale[id(model.encoder.embed.e1.weight)] == (pytest.approx(0.025), 0.0)  # no decay on the table
    assert not any(id(p) in scale for p in model.decoder.parameters())
    # configure_optimizers applies the scales to the peak rate (the schedule then multiplies "lr")
    opt = plan.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(bottom.ff1.weight)] == pytest.approx(0.05)
    freeze(model, trainable_last_layers=1)
    ids = {id(p) for g in plan.param_groups() for p in g["params"]}
    assert id(model.encoder.embed.e1.weight) not in ids and id(bottom.ff1.weight) not in ids
    assert id(top.ff1.weight) in ids


def test_knn_probs_are_neighbour_label_shares():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    codes = np.array([0, 0, 1, 1, -1])  # the last reference cell has no label: ignored
    p = knn_probs(ref, codes, np.array([[2.0, 0.1], [0.0, 3.0]]), 3, n_neighbors=3)
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0]])


def test_finetune_options_then_annotate_with_reference(adata, model):
    recipe = FinetuneRecipe(epochs=8, patience=8, class_weight="balanced", dropout=0.1, body_lr_ratio=0.3,
                            layer_decay=0.8, state_loss_weight=0.5, batch=BatchSettings(mask_fraction=0.1,
                                                                                        keep=(0.6, 1.0)))
    tuned = finetune(adata, model, recipe=recipe)
    assert all(m.p == 0.0 for m in tuned.modules() if isinstance(m, nn.Dropout))  # restored
    hist = adata.uns["atacformer_finetune"]["history"]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    query = toy_adata(seed=7)
    ref_before = adata.copy()
    annotate(query, tuned, threshold=0.0, reference=adata, knn_weight=1.0, n_neighbors=5, key_added="knn")
    assert set(adata.obsm) == set(ref_before.obsm) and set(adata.obs) == set(ref_before.obs)  # reference untouched
    probs = query.obsm["knn_probs"]
    np.testing.assert_allclose(np.round(probs * 5), probs * 5, atol=1e-5)  # pure shares of 5 neighbours
    assert macro_f1(query.obs["cell_type"], query.obs["knn"]) > 0.7  # chance: 0.33
    annotate(query, tuned, threshold=0.0, key_added="head")
    annotate(query, tuned, threshold=0.0, reference=adata, knn_weight=0.5, n_neighbors=5)
    assert query.uns["atacformer_label"]["knn_weight"] == 0.5 and query.uns["head"]["knn_weight"] == 0.0
    assert query.uns["atacformer_label"]["n_neighbors"] == 5
    mixed = 0.5 * query.obsm["head_probs"] + 0.5 * probs
    np.testing.assert_allclose(query.obsm["atacformer_label_probs"], mixed, atol=1e-5)
    with pytest.raises(ValueError, match="knn_weight"):
        annotate(query, tuned, reference=adata, knn_weight=1.5)
    with pytest.raises(ValueError, match="no 'missing'"):
        annotate(query, tuned, reference=adata, labels_key="missing")


def test_head_only_finetune_leaves_the_encoder(adata, model):
    tuned = finetune(adata, model, recipe=FinetuneRecipe(trainable_layers=0, epochs=2, patience=2))
    ref = model.encoder.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in tuned.encoder.state_dict().items())
    assert tuned.cell_type_head is not None


def test_early_stopping_on_validation_macro_f1(adata, model):
    finetune(adata, model, recipe=FinetuneRecipe(epochs=6, patience=6, monitor="macro_f1", seed=1))
    info = adata.uns["atacformer_finetune"]
    hist = info["history"]
    best = hist["val_macro_f1"].max()
    assert info["monitor"] == "macro_f1" and hist["val_macro_f1"][info["best_epoch"]] == best
    assert info["best_val_loss"] == pytest.approx(hist["val_loss"][info["best_epoch"]])
    finetune(adata, toy_model(), recipe=FinetuneRecipe(epochs=3, patience=3))
    info = adata.uns["atacformer_finetune"]
    assert info["best_epoch"] == info["history"]["val_loss"].idxmin()


def test_early_stopping_ends_training(adata, model):
    """A learning rate of 0 never improves the validation loss: training stops after ``patience`` rounds."""
    recipe = FinetuneRecipe(epochs=10, patience=2).replace(optimizer={"lr": 0.0})
    finetune(adata, model, recipe=recipe)
    hist = adata.uns["atacformer_finetune"]["history"]
    assert len(hist) == 3  # the first round sets the best, then 2 without improvement
