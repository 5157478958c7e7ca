import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from atacformer.metrics import ari, lsi, spectral, tfidf
from atacformer.tl import cluster


def _toy(seed=0, n=90, n_feat=300):
    """Three cell types, each opening its own block of features plus shared noise; variable depth."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], n // 3)
    P = np.full((3, n_feat), 0.01)
    for t in range(3):
        P[t, t * 100 : (t + 1) * 100] = 0.15
    depth = rng.uniform(0.5, 2.0, n)
    X = rng.random((n, n_feat)) < np.minimum(P[np.repeat(np.arange(3), n // 3)] * depth[:, None], 1)
    return ad.AnnData(sp.csr_matrix(X.astype(np.float32))), labels


def test_tfidf_hand_case():
    X = sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 2.0]]))
    T = tfidf(X, scale_factor=1.0).toarray()
    # tf row0 = (.5,.5), row1 = (0,1); idf = 2/colsum = (2, 2/3)
    np.testing.assert_allclose(T, np.log1p([[0.5 * 2, 0.5 * 2 / 3], [0.0, 2 / 3]]))


@pytest.mark.parametrize("method,key", [(lsi, "X_lsi"), (spectral, "X_spectral")])
def test_baselines_separate_toy_types(method, key):
    adata, labels = _toy()
    method(adata, n_comps=10)
    emb = adata.obsm[key]
    assert emb.shape[0] == adata.n_obs and 2 <= emb.shape[1] <= 10
    assert np.isfinite(emb).all()
    cluster(adata, use_rep=key, n_clusters=3)
    assert ari(labels, adata.obs["leiden"]) > 0.8


def test_lsi_drops_depth_component_and_spectral_says_implementation():
    adata, _ = _toy()
    lsi(adata, n_comps=10)
    info = adata.uns["X_lsi"]
    assert info["dropped_first"] == (abs(info["depth_cor"][0]) > 0.75)
    assert adata.obsm["X_lsi"].shape[1] == 10
    spectral(adata, n_comps=5, use_snapatac2=False)
    assert "re-implementation" in adata.uns["X_spectral"]["implementation"]
    ev = np.array(adata.uns["X_spectral"]["eigenvalues"])
    assert (np.diff(ev) <= 1e-9).all() and (ev > 0).all()


def test_negative_counts_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        lsi(ad.AnnData(sp.csr_matrix(np.array([[1.0, -1.0], [1.0, 1.0]]))))
