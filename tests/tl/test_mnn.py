"""MNN correction (tl.mnn_correct / mnn_shift) on hand-made geometry and the toy data."""

import numpy as np
import pytest

import atacformer as af
from atacformer.metrics.batch import celltype_asw, ilisi
from atacformer.tl.mnn import mnn_shift

from .conftest import toy_adata


def _shifted_clusters(seed: int = 0):
    """Two cell types in 20-D; batch "b" = batch "a" plus an offset along a third axis (a batch effect)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(20)[:2]
    types = np.repeat([0, 1], 40)
    a = centres[types] + 0.12 * rng.normal(size=(80, 20))
    b = centres[types] + 0.6 * np.eye(20)[2] + 0.12 * rng.normal(size=(80, 20))
    return np.vstack([a, b]), np.r_[["a"] * 80, ["b"] * 80], np.r_[types, types]


def test_shift_moves_the_other_batch_onto_the_reference_and_keeps_types_apart():
    X, batch, types = _shifted_clusters()
    out, facts = mnn_shift(X, batch, n_neighbors=10)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(out[batch == "a"], unit[batch == "a"], atol=1e-6)  # reference (tie: first) unchanged
    assert facts["reference"] == "a" and facts["batches"]["b"]["pairs"] > 0 and facts["batches"]["b"]["sigma"] > 0
    for t in (0, 1):  # each type's centroid in b lands on its centroid in a
        gap_before = np.linalg.norm(unit[(batch == "b") & (types == t)].mean(0)
                                    - unit[(batch == "a") & (types == t)].mean(0))
        gap_after = np.linalg.norm(out[(batch == "b") & (types == t)].mean(0)
                                   - out[(batch == "a") & (types == t)].mean(0))
        assert gap_before > 0.2 and gap_after < 0.45 * gap_before
    assert ilisi(out, batch, perplexity=10) > ilisi(unit, batch, perplexity=10) + 0.4
    assert celltype_asw(out, types) >= celltype_asw(unit, types) - 0.01


def test_reference_batch_is_kept_and_checked():
    X, batch, _ = _shifted_clusters()
    out, facts = mnn_shift(X, batch, reference="b", n_neighbors=10)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert facts["reference"] == "b" and set(facts["batches"]) == {"a"}
    np.testing.assert_allclose(out[batch == "b"], unit[batch == "b"], atol=1e-6)
    assert not np.allclose(out[batch == "a"], unit[batch == "a"])
    with pytest.raises(ValueError, match="reference batch 'c'"):
        mnn_shift(X, batch, reference="c")


def test_mnn_correct_on_adata_mixes_toy_batches():
    adata = toy_adata(batch_shift=True)
    af.tl.lsi(adata, n_comps=10)
    assert af.tl.mnn_correct(adata, use_rep="X_lsi", batch_key="donor") is None
    batch = adata.obs["donor"]
    assert adata.obsm["X_lsi_mnn"].shape == adata.obsm["X_lsi"].shape
    assert adata.uns["X_lsi_mnn"]["reference"] in ("d1", "d2")
    assert ilisi(adata.obsm["X_lsi_mnn"], batch, perplexity=10) > ilisi(adata.obsm["X_lsi"], batch, perplexity=10)
    with pytest.raises(ValueError, match="no 'X_nope'"):
        af.tl.mnn_correct(adata, use_rep="X_nope", batch_key="donor")
    fresh = af.tl.mnn_correct(adata, use_rep="X_lsi", batch_key="donor", key_added="c", n_neighbors=5, copy=True)
    assert "c" in fresh.obsm and "c" not in adata.obsm and fresh.uns["c"]["n_neighbors"] == 5
