"""Alignment and imputation metrics against brute force."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import pearsonr

from atacformer.metrics.alignment import (
    foscttm,
    n_closer,
    pearson_per_cell,
    pearson_per_gene,
    retrieval,
)


def _pairs(n=40, d=5, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, x + noise * rng.standard_normal((n, d))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_foscttm_and_retrieval_match_brute_force(metric):
    x, y = _pairs()
    d = cdist(x, y, metric=metric)  # d[i, j] = dist(x_i, y_j)
    n = len(x)
    closer_xy = np.array([(d[i] < d[i, i]).sum() for i in range(n)])
    closer_yx = np.array([(d[:, i] < d[i, i]).sum() for i in range(n)])
    assert np.array_equal(n_closer(x, y, metric=metric, chunk=7), closer_xy)  # chunking changes nothing
    f = foscttm(x, y, metric=metric)
    assert f["x_to_y"] == pytest.approx(closer_xy.mean() / (n - 1))
    assert f["y_to_x"] == pytest.approx(closer_yx.mean() / (n - 1))
    assert f["mean"] == pytest.approx((f["x_to_y"] + f["y_to_x"]) / 2)
    r = retrieval(x, y, k=(1, 10), metric=metric)
    assert r["x_to_y_top1"] == pytest.approx((d.argmin(1) == np.arange(n)).mean())
    assert r["y_to_x_top1"] == pytest.approx((d.argmin(0) == np.arange(n)).mean())
    top10 = np.argsort(d, axis=1)[:, :10]
    assert r["x_to_y_top10"] == pytest.approx(np.mean([i in top10[i] for i in range(n)]))


def test_foscttm_extremes():
    x, _ = _pairs(n=200, noise=0.0)
    assert foscttm(x, x)["mean"] == 0.0
    rng = np.random.default_rng(1)
    f = foscttm(x, rng.standard_normal(x.shape))["mean"]
    assert 0.4 < f < 0.6  # random pairing
    with pytest.raises(ValueError, match="paired rows"):
        foscttm(x, x[:10])


def test_pearson_per_gene_and_cell_match_scipy():
    rng = np.random.default_rng(0)
    true = rng.poisson(2.0, size=(30, 8)).astype(float)
    pred = true + rng.standard_normal(true.shape)
    true[:, 3] = 1.0  # a constant gene → NaN
    g = pearson_per_gene(pred, true)
    c = pearson_per_cell(pred, true)
    assert np.isnan(g[3]) and np.isfinite(np.delete(g, 3)).all()
    for j in (0, 5):
        assert g[j] == pytest.approx(pearsonr(pred[:, j], true[:, j])[0])
    for i in (0, 17):
        assert c[i] == pytest.approx(pearsonr(pred[i], true[i])[0])
    with pytest.raises(ValueError, match="same"):
        pearson_per_gene(pred, true[:5])
