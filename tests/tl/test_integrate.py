import numpy as np
import pytest
import torch

from atacformer.metrics.batch import ilisi
from atacformer.tl import integrate, integrate_model, map_query
from atacformer.tl.integrate import write_integrated
from atacformer.tl.mnn import mnn_pairs
from atacformer.train import IntegrateRecipe, QueryRecipe, encode_cells, weights_digest
from atacformer.train.batcher import adata_cells
from atacformer.train.plans import grad_reverse

from .conftest import toy_adata, toy_model


def test_grad_reverse_flips_and_scales_gradient():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_integrate_writes_embedding_and_leaves_model(model):
    adata = toy_adata(batch_shift=True)
    before = weights_digest(model)
    recipe = IntegrateRecipe(epochs=3, contrastive_weight=0.0)
    assert integrate(adata, model, batch_key="donor", recipe=recipe) is None
    emb = adata.obsm["X_atacformer_integrated"]
    assert emb.shape == (adata.n_obs, model.config.d_model) and np.isfinite(emb).all()
    assert weights_digest(model) == before
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1)[adata.obs["donor"] == "d1"], 1.0, atol=1e-5)  # reference
    info = adata.uns["X_atacformer_integrated"]
    assert info["mnn_correct"]["batches"]["d2"]["pairs"] > 0 and info["batches"] == ["d1", "d2"]
    hist = info["history"]
    assert len(hist) == 3 and (hist["discriminator_accuracy"].between(0, 1)).all()
    # integrate = integrate_model (writes nothing) + write_integrated; obsm[..._model] is the corrected
    # model's own output
    plain = toy_adata(batch_shift=True)
    corrected, history = integrate_model(plain, model, batch_key="donor", recipe=recipe)
    assert weights_digest(corrected) != before and weights_digest(model) == before and len(history) == 3
    assert set(plain.obsm) == set() and set(plain.uns) == set(toy_adata().uns)
    write_integrated(plain, corrected, history, batch_key="donor", recipe=recipe, reference_batch="d2",
                     key_added="X_int")
    own, _ = encode_cells(corrected, adata_cells(plain, corrected))
    np.testing.assert_array_equal(plain.obsm["X_int_model"], own)
    np.testing.assert_allclose(np.linalg.norm(plain.obsm["X_int"], axis=1)[plain.obs["donor"] == "d2"], 1.0,
                               atol=1e-5)
    assert plain.uns["X_int"]["mnn_correct"]["reference"] == "d2"
    copied = integrate(plain, model, batch_key="donor", recipe=recipe.replace(epochs=1, correct=False), copy=True)
    assert "X_atacformer_integrated" in copied.obsm and "X_atacformer_integrated" not in plain.obsm
    assert "X_atacformer_integrated_model" not in copied.obsm
    with pytest.raises(ValueError, match="single batch"):
        adata.obs["one"] = "b"
        integrate(adata, model, batch_key="one")
    with pytest.raises(ValueError, match="reference_batch"):
        integrate(adata, model, batch_key="donor", reference_batch="d9")


def test_map_query_transfers_labels(model):
    ref = toy_adata(seed=1)
    query = toy_adata(seed=2, n_per_type=10)
    ref_keys = (set(ref.obsm), set(ref.obs), set(ref.uns))
    # an untrained encoder still separates the three accessibility programmes
    assert map_query(query, ref, model, n_neighbors=5) is None
    acc = (query.obs["atacformer_mapped"].astype(str) == query.obs["cell_type"]).mean()
    assert acc > 0.8
    u = query.obs["atacformer_mapped_uncertainty"]
    assert u.between(0, 1).all()
    assert query.obsm["X_atacformer"].shape == (30, model.config.d_model)
    assert (set(ref.obsm), set(ref.obs), set(ref.uns)) == ref_keys  # nothing written into the reference
    before = weights_digest(model)
    emb = query.obsm["X_atacformer"].copy()
    map_query(query, ref, model, n_neighbors=5, recipe=QueryRecipe(epochs=2), key_added="adapted",
              use_rep="X_adapted")
    assert weights_digest(model) == before  # reference model frozen and not changed
    assert (set(ref.obsm), set(ref.obs), set(ref.uns)) == ref_keys
    assert "adapted" in query.obs and query.uns["adapted"]["query_epochs"] == 2
    assert not np.allclose(query.obsm["X_adapted"], emb)  # the offset moved the query cells
    # a given reference embedding is used as is
    ref.obsm["X_atacformer"] = np.zeros((ref.n_obs, model.config.d_model), dtype=np.float32)
    ref.obsm["X_atacformer"][:, 0] = 1.0
    out = map_query(query, ref, model, n_neighbors=5, copy=True)
    assert out is not query and "atacformer_mapped" in out.obs
    with pytest.raises(ValueError, match="no 'missing'"):
        map_query(query, ref, model, labels_key="missing")


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
    model = toy_model(contrastive_weight=1.0)
    before, _ = encode_cells(model, adata_cells(adata, model))
    recipe = IntegrateRecipe(epochs=6, n_neighbors=5, correct=False).replace(optimizer={"lr": 3e-3})
    integrate(adata, model, batch_key="donor", recipe=recipe)
    hist = adata.uns["X_atacformer_integrated"]["history"]
    assert (hist["contrastive"] > 0).all()
    after = adata.obsm["X_atacformer_integrated"]
    batch = adata.obs["donor"]
    plain = toy_adata(batch_shift=True)  # same data, masked-bin loss only
    integrate(plain, model, batch_key="donor", recipe=recipe.replace(contrastive_weight=0.0, adversary_weight=0.0))
    assert (plain.uns["X_atacformer_integrated"]["history"]["contrastive"] == 0).all()
    mixed = ilisi(after, batch, perplexity=10)
    assert mixed > ilisi(before, batch, perplexity=10) + 0.08
    assert mixed > ilisi(plain.obsm["X_atacformer_integrated"], batch, perplexity=10)
    with pytest.raises(ValueError, match="contrastive"):
        integrate(adata, toy_model(), batch_key="donor", recipe=IntegrateRecipe(contrastive_weight=1.0))
