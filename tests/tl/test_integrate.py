import numpy as np
import pytest
import torch

from atacformer.tl import integrate, map_query
from atacformer.tl._torch import cell_dicts, embed_cells
from atacformer.tl.integrate import grad_reverse

from .conftest import toy_adata


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
    np.testing.assert_allclose(embed_cells(corrected, cell_dicts(adata, corrected)), emb, atol=1e-5)
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
