import numpy as np
import pytest
from scipy.stats import chi2

from atacformer.metrics import (
    batch_asw,
    celltype_asw,
    graph_connectivity,
    ilisi,
    kbet,
    lisi,
)
from atacformer.metrics.batch import kbet_pvalues, simpson_lisi


def _two_blobs(mixed: bool, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (n, 2)), rng.normal(20, 1, (n, 2))])
    labels = np.repeat(["t1", "t2"], n)
    batch = np.tile(["b1", "b2"], n) if mixed else np.repeat(["b1", "b2"], n)
    return X, labels, batch


def test_simpson_lisi_hand_case():
    w = np.array([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75]])
    codes = np.array([[0, 1], [0, 0], [0, 1]])
    # p = (.5,.5) → 2 ; p = (1,0) → 1 ; p = (.25,.75) → 1/(1/16+9/16) = 1.6
    np.testing.assert_allclose(simpson_lisi(w, codes, 2), [2.0, 1.0, 1.6])


def test_ilisi_mixed_vs_separated():
    X, _, b_mix = _two_blobs(True)
    _, _, b_sep = _two_blobs(False)
    assert ilisi(X, b_mix, perplexity=10) > 0.8
    assert ilisi(X, b_sep, perplexity=10) == pytest.approx(0.0, abs=1e-6)
    assert np.median(lisi(X, b_mix, perplexity=10)) == pytest.approx(2.0, abs=0.2)
    with pytest.raises(ValueError):
        ilisi(X, np.repeat("b", len(X)))


def test_kbet_pvalues_hand_case():
    # 2 batches at 50/50, k = 4: all four neighbours from one batch → χ² = 4, df = 1
    p = kbet_pvalues(np.array([[0, 0, 0, 0], [0, 1, 0, 1]]), np.array([0.5, 0.5]))
    assert p[0] == pytest.approx(chi2.sf(4.0, 1)) and p[0] < 0.05
    assert p[1] == pytest.approx(1.0)


def test_kbet_acceptance():
    X, labels, b_mix = _two_blobs(True)
    _, _, b_sep = _two_blobs(False)
    assert kbet(X, b_mix, n_neighbors=10) > 0.8
    assert kbet(X, b_sep, n_neighbors=10) == 0.0
    with pytest.raises(ValueError):
        kbet(X, b_sep, labels=labels)  # every label is in a single batch


def test_asw_scores():
    X, labels, b_mix = _two_blobs(True)
    assert celltype_asw(X, labels) > 0.9
    assert celltype_asw(X, np.tile(["t1", "t2"], 60)) == pytest.approx(0.5, abs=0.05)
    # within each type the batches overlap → batch ASW near 1; split each type by batch → low
    assert batch_asw(X, b_mix, labels) > 0.8
    rng = np.random.default_rng(1)
    X2 = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
    assert batch_asw(X2, np.repeat(["b1", "b2"], 30), np.repeat("t", 60)) < 0.1


def test_graph_connectivity_hand_graph():
    import scipy.sparse as sp

    # type a: 0-1 connected, 2 isolated → 2/3 ; type b: 3-4 connected → 1
    A = sp.csr_matrix((np.ones(4), ([0, 1, 3, 4], [1, 0, 4, 3])), shape=(5, 5))
    assert graph_connectivity(None, ["a", "a", "a", "b", "b"], graph=A) == pytest.approx((2 / 3 + 1) / 2)
    X, labels, _ = _two_blobs(True)
    assert graph_connectivity(X, labels, n_neighbors=5) == 1.0
