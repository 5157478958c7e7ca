import anndata as ad
import numpy as np
import pytest
import torch

from atacformer.genome import Genome, data_path, get_genome
from atacformer.tokenize import BinVocab


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and the CI runner is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_vocab() -> BinVocab:
    """3 chromosomes, 40 bins of 5 kb (the last bin of chr3 clipped)."""
    genome = Genome.from_chrom_sizes({"chr1": 100_000, "chr2": 60_000, "chr3": 38_000}, name="toy")
    return BinVocab(genome, 5000)


def random_cells(vocab: BinVocab, n: int, seed: int = 0, *, low: int = 2, high: int = 20) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"bin_ids": rng.choice(vocab.n_bins, size=int(rng.integers(low, high)), replace=False),
         "cell_type": int(rng.integers(-1, 3)), "organ": int(rng.integers(-1, 2))}
        for _ in range(n)
    ]


def hemato_cells() -> tuple[list[dict], BinVocab, list[str]]:
    """The shipped hemato peak matrix re-binned to hg19 5 kb bins (peak midpoint)."""
    adata = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    vocab = BinVocab(get_genome("hg19"), 5000)
    chrom_idx = np.array([vocab.genome.chrom_index(c) if vocab.genome.chrom_index(c) is not None else -1
                          for c in adata.var["chrom"].astype(str)])
    mid = ((adata.var["start"].to_numpy() + adata.var["end"].to_numpy()) // 2).astype(np.int64)
    ok = chrom_idx >= 0
    peak_bin = np.full(adata.n_vars, -1, dtype=np.int64)
    peak_bin[ok] = vocab.bins.bin_ids(chrom_idx[ok], mid[ok])
    X = adata.X.tocsr()
    types = adata.obs["cell_type"].astype("category")
    cells = []
    for i in range(adata.n_obs):
        cols = X.indices[X.indptr[i]:X.indptr[i + 1]]
        b = peak_bin[cols]
        cells.append({"bin_ids": np.unique(b[b >= 0]), "cell_type": int(types.cat.codes.iloc[i])})
    return cells, vocab, list(types.cat.categories)


@pytest.fixture(scope="session")
def make_cells():
    return random_cells


@pytest.fixture(scope="session")
def hemato():
    return hemato_cells()
