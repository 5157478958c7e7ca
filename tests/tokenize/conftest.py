import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer.genome import Genome


@pytest.fixture
def toy_bins():
    """3 chromosomes, 5 kb bins: chr1 0..19, chr2 20..31, chr3 32..38 (39 bins)."""
    return Genome.from_chrom_sizes({"chr1": 100_000, "chr2": 60_000, "chr3": 33_000}, name="toy").bins(5000)


def _make_cells(bins, n_cells, *, seed=0, density=0.25, prefix="c", labels=("B", "T", None)):
    """A cells × bins AnnData as `atacformer ingest` makes it (counts 1-3, obs cell_type/batch)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, bins.n_bins, density=density, format="csr", random_state=seed,
                  data_rvs=lambda n: rng.integers(1, 4, n)).astype(np.int32)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(rng.choice(np.array(labels, dtype=object), n_cells)),
         "batch": rng.integers(0, 3, n_cells)},
        index=[f"{prefix}{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X, obs=obs, var=bins.var(), uns=bins.uns())


def _open_bins_of(adata):
    """Reference: each row's non-zero columns as bin ids (var is the full bin index here)."""
    X = sp.csr_matrix(adata.X)
    return [np.sort(X.indices[X.indptr[i]:X.indptr[i + 1]][X.data[X.indptr[i]:X.indptr[i + 1]] != 0])
            for i in range(X.shape[0])]


@pytest.fixture
def make_cells():
    return _make_cells


@pytest.fixture
def open_bins_of():
    return _open_bins_of
