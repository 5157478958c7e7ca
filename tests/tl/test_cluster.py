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
    assert cluster(adata, use_rep="X_emb", n_clusters=k, key_added="cl") is None
    assert adata.obs["cl"].nunique() == k
    assert adata.uns["cl"]["n_clusters"] == k and adata.uns["cl"]["params"]["resolution"] > 0
    if k == 4:
        assert ari(labels, adata.obs["cl"]) == pytest.approx(1.0)


def test_cluster_writes_the_graph_where_scanpy_reads_it():
    adata, _ = _blobs()
    cluster(adata, use_rep="X_emb", resolution=1.0, n_neighbors=6)
    nb = adata.uns["neighbors"]
    assert nb["connectivities_key"] == "connectivities" and nb["distances_key"] == "distances"
    assert nb["params"]["n_neighbors"] == 6 and nb["params"]["use_rep"] == "X_emb"
    C, D = adata.obsp["connectivities"], adata.obsp["distances"]
    assert (C != C.T).nnz == 0 and (D.getnnz(axis=1) == 6).all() and D.data.min() > 0  # self excluded
    # the distances are the Euclidean distances to each cell's neighbours
    Dc, X = D.tocoo(), adata.obsm["X_emb"]
    np.testing.assert_allclose(Dc.data, np.linalg.norm(X[Dc.row] - X[Dc.col], axis=1), rtol=1e-6)
    cluster(adata, use_rep="X_emb", resolution=1.0, neighbors_key="emb")
    assert adata.uns["emb"]["connectivities_key"] == "emb_connectivities" and "emb_distances" in adata.obsp


def test_cluster_copy_leaves_the_argument_alone():
    adata, _ = _blobs()
    out = cluster(adata, use_rep="X_emb", n_clusters=4, copy=True)
    assert "leiden" in out.obs and "leiden" not in adata.obs and not adata.obsp and "neighbors" not in adata.uns


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


def test_umap_is_seeded_and_stored_as_scanpy_does():
    adata, _ = _blobs(n=15)
    umap(adata, use_rep="X_emb", seed=3)
    first = adata.obsm["X_umap"].copy()
    assert {"a", "b", "n_neighbors", "use_rep"} <= set(adata.uns["umap"]["params"])
    out = umap(adata, use_rep="X_emb", seed=3, key_added="X_u2", copy=True)
    assert first.shape == (60, 2) and "X_u2" not in adata.obsm
    np.testing.assert_allclose(first, out.obsm["X_u2"], atol=1e-4)


def test_cluster_reaches_the_count_when_the_graph_has_more_components():
    # 5 tight, far-apart blobs (kNN graph: 5 components, so Leiden alone never gives fewer than 5);
    # blobs 0/1 and 2/3 are close pairs, 4 is alone: 3 clusters must merge exactly the close pairs
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [3, 0], [100, 0], [103, 0], [50, 80]], dtype=float)
    sizes = [40, 10, 40, 10, 30]
    X = np.concatenate([c + 0.05 * rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)])
    blob = np.repeat(np.arange(5), sizes)
    adata = ad.AnnData(np.zeros((len(X), 1), dtype=np.float32), obsm={"X_e": X})
    cluster(adata, use_rep="X_e", n_clusters=3, n_neighbors=5)
    got = adata.obs["leiden"].astype(int).to_numpy()
    assert len(np.unique(got)) == 3
    expected = np.array([0, 0, 1, 1, 2])[blob]
    assert ari(expected, got) == 1.0
    assert adata.uns["leiden"]["n_clusters"] == 3
