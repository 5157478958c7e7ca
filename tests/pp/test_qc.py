import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer import pp


def _adata():
    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 1], [3, 3, 0]], dtype=np.int32))
    obs = pd.DataFrame({"n_unique": [100, 5, 500], "tss_enrichment": [8.0, 2.0, np.nan],
                        "frac_mito": [0.01, 0.5, 0.02]}, index=["a", "b", "c"])
    return ad.AnnData(X=X, obs=obs)


def test_filter_cells_thresholds_and_nan():
    a = _adata()
    out = pp.filter_cells(a, min_fragments=10, min_tss_enrichment=4, copy=True)
    assert list(out.obs_names) == ["a"]  # b: too few fragments; c: NaN TSS enrichment fails
    assert out.uns["filter_cells"]["n_removed"] == 2 and a.n_obs == 3
    pp.filter_cells(a, max_frac_mito=0.1, min_counts=3)
    assert list(a.obs_names) == ["a", "c"]
    with pytest.raises(ValueError, match="no cells pass"):
        pp.filter_cells(a, min_fragments=10_000)
    with pytest.raises(ValueError, match="nucleosome_signal"):
        pp.filter_cells(a, max_nucleosome_signal=2)


def test_qc_summary_and_count_metrics():
    a = _adata()
    pp.count_metrics(a)
    assert list(a.obs["n_counts"]) == [3, 1, 6] and list(a.obs["n_bins"]) == [2, 1, 2]
    s = pp.qc_summary(a)
    assert s.loc["n_counts", "max"] == 6 and s.loc["n_unique", "median"] == 100
    assert s.loc["tss_enrichment", "mean"] == pytest.approx(5.0)
