import anndata as ad
import numpy as np
import pytest

from atacformer.metrics import ari
from atacformer.tl import cluster, umap


def _blobs(n_types=4, n=25, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (n_types, 5))
    X = np.vstack([rng.normal(c, 1, (n, 5)) for c in centers])
    adata = ad.AnnData(np.zeros((n_types * n, 1), dtype=np.float32))
    adata.obsm["X_emb"] = X
    return adata, np.repeat(np.arange(n_types), n)


@pytest.mark.parametrize("k", [4, 7])  # 4 disconnected blobs: fewer is impossible
def test_cluster_hits_requested_count(k):
    adata, labels = _blobs()
    cluster(adata, use_rep="X_emb", n_clusters=k, key_added="cl")
    assert adata.obs["cl"].nunique() == k
    assert adata.uns["cl"]["n_clusters"] == k and adata.uns["cl"]["resolution"] > 0
    if k == 4:
        assert ari(labels, adata.obs["cl"]) == pytest.approx(1.0)


def test_cluster_resolution_and_errors():
    adata, _ = _blobs()
    cluster(adata, use_rep="X_emb", resolution=0.05)
    few = adata.obs["leiden"].nunique()
    cluster(adata, use_rep="X_emb", resolution=5.0)
    assert adata.obs["leiden"].nunique() > few
    with pytest.raises(ValueError, match="exactly one"):
        cluster(adata, use_rep="X_emb")
    with pytest.raises(ValueError, match="no 'X_missing'"):
        cluster(adata, use_rep="X_missing", resolution=1.0)


def test_umap_is_seeded():
    adata, _ = _blobs(n=15)
    umap(adata, use_rep="X_emb", seed=3)
    first = adata.obsm["X_umap"].copy()
    umap(adata, use_rep="X_emb", seed=3)
    assert first.shape == (60, 2)
    np.testing.assert_allclose(first, adata.obsm["X_umap"], atol=1e-4)
