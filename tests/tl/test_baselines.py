"""tl.lsi / tl.spectral: the scanpy contract around the pp array functions."""

import anndata as ad
import numpy as np
import pytest

from atacformer import pp, tl

from .conftest import toy_adata


@pytest.mark.parametrize("tool,array_fn,key", [(tl.lsi, pp.lsi_embedding, "X_lsi"),
                                               (tl.spectral, pp.spectral_embedding, "X_spectral")])
def test_writes_obsm_and_uns_or_returns_a_copy(tool, array_fn, key):
    X = toy_adata().X
    adata = ad.AnnData(X)
    assert tool(adata, n_comps=8, seed=1) is None
    emb, info = array_fn(X, n_comps=8, seed=1)
    np.testing.assert_array_equal(adata.obsm[key], emb)
    assert adata.uns[key].keys() == info.keys()
    fresh = ad.AnnData(X)
    out = tool(fresh, n_comps=8, seed=1, key_added="X_b", copy=True)
    assert "X_b" in out.obsm and "X_b" not in fresh.obsm and not fresh.uns  # the argument is left alone
