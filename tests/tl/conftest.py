"""Tiny synthetic cells × bins data on a two-chromosome toy genome, and a tiny untrained model."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

torch.set_num_threads(1)  # the CI box has 2 shared cores; intra-op threads only add contention for tiny models

from atacformer.genome import Genome
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.tokenize.vocab import BinVocab

CHROM_SIZES = {"chr1": 250_000, "chr2": 150_000}  # 50 + 30 = 80 bins of 5 kb


def toy_adata(n_per_type: int = 30, types=("A", "B", "C"), batches=("d1", "d2"), seed: int = 0,
              batch_shift: bool = False) -> ad.AnnData:
    """Each type opens its own block of 20 bins with p=0.5 (plus 3 % background); optionally each batch
    also opens its own 10 extra bins (a batch effect)."""
    rng = np.random.default_rng(seed)
    genome = Genome.from_chrom_sizes(CHROM_SIZES, name="toy")
    bins = genome.bins(5000)
    n = n_per_type * len(types)
    P = np.full((n, bins.n_bins), 0.03)
    cell_type = np.repeat(types, n_per_type)
    batch = np.tile(batches, n // len(batches) + 1)[:n]
    for t, name in enumerate(types):
        P[cell_type == name, t * 20 : (t + 1) * 20] = 0.5
    if batch_shift:
        for b, name in enumerate(batches):
            P[batch == name, 60 + b * 10 : 70 + b * 10] = 0.6
    X = (rng.random(P.shape) < P).astype(np.float32)
    X[:, 0] = 0  # one never-open bin
    adata = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"cell_type": cell_type, "donor": batch},
                                                           index=[f"c{i}" for i in range(n)]), var=bins.var())
    adata.uns.update(bins.uns())
    return adata


def toy_model(seed: int = 0, **overrides) -> Atacformer:
    torch.manual_seed(seed)
    vocab = BinVocab(Genome.from_chrom_sizes(CHROM_SIZES, name="toy"), 5000)
    return Atacformer(AtacformerConfig.from_preset("tiny", vocab, dropout=0.0, **overrides))


@pytest.fixture
def adata():
    return toy_adata()


@pytest.fixture
def model():
    return toy_model()
