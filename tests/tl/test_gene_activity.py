"""CRAFT baselines: gene activity, fitted LSI/PCA, CCA, kNN and ridge imputation (brute force / sklearn)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from atacformer.genome import Genome
from atacformer.tl import lsi as lsi_inplace
from atacformer.tl.gene_activity import (
    fit_cca,
    fit_lsi,
    fit_pca,
    gene_activity,
    knn_impute,
    log_normalize,
    ridge_impute,
)


@pytest.fixture
def toy_genome(tmp_path):
    (tmp_path / "genes.bed").write_text("chr1\t10000\t12000\tGa\t+\nchr1\t30000\t31000\tGb\t-\n"
                                        "chr2\t1000\t1500\tGc\t+\nchr1\t10000\t10500\tGa\t+\n")
    return Genome.from_chrom_sizes({"chr1": 50_000, "chr2": 20_000}, name="toy", genes=tmp_path / "genes.bed")


def test_gene_activity_sums_regions_over_extended_bodies(toy_genome):
    var = pd.DataFrame({"chrom": ["chr1", "chr1", "chr1", "chr1", "chr2", "chr2"],
                        "start": [7000, 8500, 11900, 31500, 1400, 9000],
                        "end": [7800, 8600, 12500, 32500, 1600, 9100]})
    var.index = [f"r{i}" for i in range(6)]
    X = sp.csr_matrix(np.arange(1, 13).reshape(2, 6))
    atac = ad.AnnData(X=X, obs=pd.DataFrame(index=["c0", "c1"]), var=var)
    out = gene_activity(atac, genome=toy_genome, upstream=2000, downstream=0)
    # Ga (+, longest record 10000-12000) → 8000-12000: r1, r2. Gb (-) → 30000-33000: r3. Gc (+) → 0-1500: r4
    want = {"Ga": X[:, [1, 2]].sum(1), "Gb": X[:, [3]].sum(1), "Gc": X[:, [4]].sum(1)}
    for g, w in want.items():
        assert np.array_equal(out[:, g].X.toarray(), np.asarray(w)), g
    assert out.var.loc["Ga", "n_regions"] == 2 and list(out.obs_names) == ["c0", "c1"]
    both = gene_activity(atac, genome=toy_genome, genes=["Gb", "Gx"])  # ± 2 kb: r3 only still
    assert list(both.var_names) == ["Gb"] and np.array_equal(both.X.toarray().ravel(), [4, 10])
    with pytest.raises(ValueError, match="none of the requested genes"):
        gene_activity(atac, genome=toy_genome, genes=["Gx"])


def _counts(n=120, f=60, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.integers(3, size=n)
    rate = rng.gamma(0.5, 1.0, size=(3, f))[z] * rng.uniform(0.5, 2, size=(n, 1))
    return sp.csr_matrix(rng.poisson(rate).astype(np.float32)), z


def test_fitted_lsi_matches_the_inplace_baseline_and_projects_new_cells():
    X, _ = _counts()
    model = fit_lsi(X, n_comps=5)
    emb = model.transform(X)
    tmp = ad.AnnData(X=X)
    lsi_inplace(tmp, n_comps=5)
    ref = tmp.obsm["X_lsi"]
    assert emb.shape == ref.shape
    for j in range(emb.shape[1]):
        assert abs(np.corrcoef(emb[:, j], ref[:, j])[0, 1]) > 0.999
    assert np.allclose(model.transform(X[:7]), emb[:7], atol=1e-5)  # a new cell depends on itself only


def test_pca_and_log_normalize():
    X, _ = _counts()
    Y = log_normalize(X, scale_factor=100)
    lib = np.asarray(X.sum(1))
    assert np.allclose(Y, np.log1p(X.toarray() / np.maximum(lib, 1e-12) * 100))
    pca = fit_pca(Y, n_comps=4)
    Z = pca.transform(Y)
    assert Z.shape == (120, 4) and np.allclose(Z.mean(0), 0, atol=1e-5)
    assert np.all(np.diff(Z.var(0)) <= 1e-6)  # components ordered by variance


def test_cca_finds_the_shared_signal():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 2))
    x = z @ rng.standard_normal((2, 6)) + 0.3 * rng.standard_normal((400, 6))
    y = z @ rng.standard_normal((2, 5)) + 0.3 * rng.standard_normal((400, 5))
    cca = fit_cca(x, y, n_comps=3, reg=0.0)
    u, v = cca.transform_x(x) / cca.corr, cca.transform_y(y) / cca.corr
    for k in range(3):
        assert np.corrcoef(u[:, k], v[:, k])[0, 1] == pytest.approx(cca.corr[k], abs=1e-4)
    assert cca.corr[1] > 0.9 and cca.corr[2] < 0.3
    assert np.allclose(np.cov(u.T), np.eye(3), atol=1e-6)  # variates are white within a modality


def test_knn_impute_is_the_neighbour_mean():
    rng = np.random.default_rng(0)
    ref, query, Y = rng.standard_normal((50, 3)), rng.standard_normal((4, 3)), rng.standard_normal((50, 6))
    got = knn_impute(ref, Y, query, n_neighbors=5)
    for i in range(4):
        nn = np.argsort(((ref - query[i]) ** 2).sum(1))[:5]
        assert np.allclose(got[i], Y[nn].mean(0))


def test_ridge_dual_equals_sklearn_primal():
    X, z = _counts(n=80, f=30)
    Y = np.random.default_rng(1).standard_normal((80, 4)) + z[:, None]
    pred, alpha = ridge_impute(X[:60], Y[:60], X[60:], alpha=0.5)
    A = X[:60].toarray().astype(np.float64)
    Ac = A - A.mean(0)
    absolute = 0.5 * np.trace(Ac @ Ac.T) / 60  # alpha is relative to the mean centred-kernel diagonal
    want = Ridge(alpha=absolute).fit(A, Y[:60]).predict(X[60:].toarray().astype(np.float64))
    assert alpha == 0.5 and np.allclose(pred, want, atol=1e-6)
    chosen, alpha = ridge_impute(X[:60], Y[:60], X[60:])
    assert chosen.shape == (20, 4) and alpha > 0
