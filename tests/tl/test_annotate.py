import numpy as np
import pytest
import torch

from atacformer.metrics import macro_f1
from atacformer.tl import annotate, finetune

from .conftest import toy_adata, toy_model


def test_finetune_then_annotate_learns_types(adata, model):
    finetune(adata, model, epochs=12, patience=12, seed=0)
    info = adata.uns["atacformer_finetune"]
    hist = info["history"]
    assert info["classes"] == ["A", "B", "C"] and model.config.cell_type_names == ["A", "B", "C"]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert info["n_train"] + info["n_val"] == adata.n_obs
    query = toy_adata(seed=7)
    annotate(query, model, threshold=0.0)
    assert macro_f1(query.obs["cell_type"], query.obs["atacformer_label"]) > 0.9
    probs = query.obsm["atacformer_label_probs"]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(query.obs["atacformer_label_confidence"], probs.max(1))
    # a threshold above every confidence turns every call into "unknown"
    annotate(query, model, threshold=1.01, key_added="strict")
    assert set(query.obs["strict"]) == {"unknown"}


def test_finetune_last_layers_only_keeps_embeddings(adata, model):
    e1 = model.encoder.embed.e1.weight.detach().clone()
    first = [p.detach().clone() for p in model.encoder.layers[0].parameters()]
    finetune(adata, model, trainable_layers=1, epochs=2, patience=5)
    assert torch.equal(e1, model.encoder.embed.e1.weight)
    assert all(torch.equal(a, b) for a, b in zip(first, model.encoder.layers[0].parameters()))
    assert not torch.equal(first[0], first[0] + 1)  # sanity
    assert all(p.requires_grad for p in model.parameters())  # unfrozen afterwards


def test_errors(adata, model):
    with pytest.raises(ValueError, match="no 'missing'"):
        finetune(adata, model, labels_key="missing")
    adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="two classes"):
        finetune(adata, model, labels_key="one")
    with pytest.raises(ValueError, match="no cell-type head"):
        annotate(adata, toy_model())
    bad = adata.copy()
    bad.uns["bin_size"] = 1000
    finetune(adata, model, epochs=1)
    with pytest.raises(ValueError):
        annotate(bad, model)
