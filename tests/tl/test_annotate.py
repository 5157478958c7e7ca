import numpy as np
import pytest
import torch

from atacformer.metrics import macro_f1
from atacformer.tl import annotate, finetune
from atacformer.train import FinetuneRecipe, weights_digest

from .conftest import toy_adata, toy_model


def test_finetune_then_annotate_learns_types(adata, model):
    before = weights_digest(model)
    tuned = finetune(adata, model, recipe=FinetuneRecipe(epochs=12, patience=12))
    info = adata.uns["atacformer_finetune"]
    hist = info["history"]
    assert info["classes"] == ["A", "B", "C"] and tuned.config.cell_type_names == ["A", "B", "C"]
    # the input model is not changed: same weights, still no head
    assert weights_digest(model) == before and model.cell_type_head is None and model.config.cell_type_names == []
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert info["n_train"] + info["n_val"] == adata.n_obs and len(hist) == 12
    query = toy_adata(seed=7)
    annotate(query, tuned, threshold=0.0)
    assert macro_f1(query.obs["cell_type"], query.obs["atacformer_label"]) > 0.9
    probs = query.obsm["atacformer_label_probs"]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(query.obs["atacformer_label_confidence"], probs.max(1))
    # a threshold above every confidence turns every call into "unknown"
    annotate(query, tuned, threshold=1.01, key_added="strict")
    assert set(query.obs["strict"]) == {"unknown"}
    # copy=True: a new AnnData, the input left alone
    fresh = toy_adata(seed=7)
    out = annotate(fresh, tuned, threshold=0.0, copy=True)
    assert "atacformer_label" not in fresh.obs and "atacformer_label" not in fresh.uns
    np.testing.assert_array_equal(out.obsm["atacformer_label_probs"], probs)
    assert annotate(fresh, tuned, threshold=0.0) is None


def test_finetune_last_layers_only_keeps_embeddings(adata, model):
    tuned = finetune(adata, model, recipe=FinetuneRecipe(trainable_layers=1, epochs=2, patience=5))
    assert torch.equal(model.encoder.embed.e1.weight, tuned.encoder.embed.e1.weight)
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.layers[0].parameters(),
                                                 tuned.encoder.layers[0].parameters(), strict=False))
    # the last layer did train
    assert any(not torch.equal(a, b) for a, b in zip(model.encoder.layers[-1].parameters(),
                                                     tuned.encoder.layers[-1].parameters(), strict=False))
    assert all(p.requires_grad for p in tuned.parameters())  # unfrozen afterwards
    assert not tuned.training


def test_errors(adata, model):
    with pytest.raises(ValueError, match="no 'missing'"):
        finetune(adata, model, labels_key="missing")
    adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="two classes"):
        finetune(adata, model, labels_key="one")
    with pytest.raises(ValueError, match="no cell-type head"):
        annotate(adata, toy_model())
    with pytest.raises(ValueError, match="monitor"):
        FinetuneRecipe(monitor="accuracy")
    bad = adata.copy()
    bad.uns["bin_size"] = 1000
    tuned = finetune(adata, model, recipe=FinetuneRecipe(epochs=1))
    with pytest.raises(ValueError, match="1000"):
        annotate(bad, tuned)
