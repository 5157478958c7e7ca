"""Array-level TF-IDF, LSI and spectral embeddings (pp.tfidf / lsi_embedding / spectral_embedding)."""

import numpy as np
import pytest
import scipy.sparse as sp

from atacformer import pp
from atacformer.metrics import ari, knn_graphs
from atacformer.tl.cluster import leiden_clusters


def toy_counts(seed=0, n=90, n_feat=300):
    """Three cell types, each opening its own block of features plus shared noise; variable depth."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], n // 3)
    P = np.full((3, n_feat), 0.01)
    for t in range(3):
        P[t, t * 100 : (t + 1) * 100] = 0.15
    depth = rng.uniform(0.5, 2.0, n)
    X = rng.random((n, n_feat)) < np.minimum(P[np.repeat(np.arange(3), n // 3)] * depth[:, None], 1)
    return sp.csr_matrix(X.astype(np.float32)), labels


def test_tfidf_hand_case():
    T = pp.tfidf(sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 2.0]])), scale_factor=1.0).toarray()
    # tf row0 = (.5,.5), row1 = (0,1); idf = 2/colsum = (2, 2/3)
    np.testing.assert_allclose(T, np.log1p([[0.5 * 2, 0.5 * 2 / 3], [0.0, 2 / 3]]))


@pytest.mark.parametrize("method", [pp.lsi_embedding, pp.spectral_embedding])
def test_embeddings_separate_toy_types(method):
    X, labels = toy_counts()
    emb, _ = method(X, n_comps=10)
    assert emb.dtype == np.float32 and emb.shape[0] == 90 and 2 <= emb.shape[1] <= 10 and np.isfinite(emb).all()
    memb, _ = leiden_clusters(knn_graphs(emb)[0], n_clusters=3)
    assert ari(labels, memb) > 0.8


def test_lsi_drops_depth_component_and_spectral_says_implementation():
    X, _ = toy_counts()
    emb, info = pp.lsi_embedding(X, n_comps=10)
    assert info["dropped_first"] == (abs(info["depth_cor"][0]) > 0.75) and emb.shape[1] == 10
    np.testing.assert_allclose(emb.std(0), 1, atol=1e-4)  # standardised components
    emb2, info2 = pp.spectral_embedding(X, n_comps=5, use_snapatac2=False)
    assert "re-implementation" in info2["implementation"]
    ev = np.array(info2["eigenvalues"])
    assert (np.diff(ev) <= 1e-9).all() and (ev > 0).all() and emb2.shape[1] == len(ev)


def test_same_seed_same_embedding_and_bad_input():
    X, _ = toy_counts()
    np.testing.assert_array_equal(pp.lsi_embedding(X, seed=3)[0], pp.lsi_embedding(X, seed=3)[0])
    with pytest.raises(ValueError, match="non-negative"):
        pp.lsi_embedding(sp.csr_matrix(np.array([[1.0, -1.0], [1.0, 1.0]])))
    with pytest.raises(ValueError, match="at least 3 cells"):
        pp.spectral_embedding(np.ones((2, 5)))
