import numpy as np
import pytest
import torch

from atacformer.metrics.batch import ilisi
from atacformer.tl import integrate, map_query
from atacformer.tl._torch import cell_dicts, embed_cells
from atacformer.tl.integrate import grad_reverse, mnn_pairs

from .conftest import toy_adata, toy_model


def test_grad_reverse_flips_and_scales_gradient():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_integrate_writes_embedding_and_leaves_model(model):
    adata = toy_adata(batch_shift=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    corrected = integrate(adata, model, batch_key="donor", epochs=3)
    emb = adata.obsm["X_atacformer_integrated"]
    assert emb.shape == (adata.n_obs, model.config.d_model) and np.isfinite(emb).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in corrected.state_dict().items())
    np.testing.assert_allclose(embed_cells(corrected, cell_dicts(adata, corrected)),
                               adata.obsm["X_atacformer_integrated_model"], atol=1e-5)  # the model's own output
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1)[adata.obs["donor"] == "d1"], 1.0, atol=1e-5)  # reference
    assert adata.uns["atacformer_integrate"]["mnn_correct"]["batches"]["d2"]["pairs"] > 0
    hist = adata.uns["atacformer_integrate"]["history"]
    assert len(hist) == 3 and (hist["discriminator_accuracy"].between(0, 1)).all()
    with pytest.raises(ValueError, match="single batch"):
        adata.obs["one"] = "b"
        integrate(adata, model, batch_key="one")


def test_map_query_transfers_labels(model):
    ref = toy_adata(seed=1)
    query = toy_adata(seed=2, n_per_type=10)
    # an untrained encoder still separates the three accessibility programmes
    map_query(query, ref, model, k=5)
    acc = (query.obs["atacformer_mapped"].astype(str) == query.obs["cell_type"]).mean()
    assert acc > 0.8
    u = query.obs["atacformer_mapped_uncertainty"]
    assert u.between(0, 1).all()
    assert "X_atacformer" in ref.obsm and query.obsm["X_atacformer"].shape == (30, model.config.d_model)
    ref_emb = ref.obsm["X_atacformer"].copy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    map_query(query, ref, model, k=5, query_epochs=2, key_added="adapted")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # reference frozen
    np.testing.assert_array_equal(ref.obsm["X_atacformer"], ref_emb)
    assert "adapted" in query.obs


def test_mnn_pairs_are_cross_batch_and_mostly_same_type():
    adata = toy_adata(batch_shift=True)
    batch, types = adata.obs["donor"].to_numpy(), adata.obs["cell_type"].to_numpy()
    pairs = mnn_pairs(adata.X.toarray(), batch, n_neighbors=5)
    assert len(pairs) > 20
    assert (batch[pairs[:, 0]] != batch[pairs[:, 1]]).all()
    assert (types[pairs[:, 0]] == types[pairs[:, 1]]).mean() > 0.9
    assert {tuple(p) for p in pairs} == {tuple(p[::-1]) for p in pairs}  # mutual: both directions listed
    assert len(mnn_pairs(adata.X.toarray(), np.array(["d1"] * adata.n_obs))) == 0


def test_integrate_with_mnn_views_mixes_batches():
    adata = toy_adata(batch_shift=True)
    model = toy_model(contrastive_weight=1.0, contrastive_drop=0.5)
    before = embed_cells(model, cell_dicts(adata, model))
    integrate(adata, model, batch_key="donor", epochs=6, lr=3e-3, mnn_k=5, correct=False)
    hist = adata.uns["atacformer_integrate"]["history"]
    assert (hist["mnn_pairs"] > 0).all() and (hist["contrastive_loss"] > 0).all()
    after = adata.obsm["X_atacformer_integrated"]
    batch = adata.obs["donor"]
    plain = toy_adata(batch_shift=True)  # same data, masked-bin loss only
    integrate(plain, model, batch_key="donor", epochs=6, lr=3e-3, contrastive_weight=0.0, adversary_weight=0.0,
              correct=False)
    mixed = ilisi(after, batch, perplexity=10)
    assert mixed > ilisi(before, batch, perplexity=10) + 0.08
    assert mixed > ilisi(plain.obsm["X_atacformer_integrated"], batch, perplexity=10)
    with pytest.raises(ValueError, match="contrastive"):
        integrate(adata, toy_model(), batch_key="donor", contrastive_weight=1.0)
