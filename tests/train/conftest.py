"""Tiny cells × bins AnnData objects for the training tests: a toy genome, and the shipped hemato peaks
re-binned to 5 kb bins by peak midpoint."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from atacformer.genome import Genome, data_path, get_genome

TOY_SIZES = {"chr1": 600_000, "chr2": 400_000}  # 120 + 80 bins of 5 kb


def binned_adata(X: sp.csr_matrix, bins, obs: pd.DataFrame) -> ad.AnnData:
    """A cells × (all bins) AnnData with the ``var``/``uns`` that atacformer ingest writes."""
    var = bins.var()
    return ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var, uns=bins.uns())


def toy_adata(n_cells: int = 96, *, seed: int = 0, genome: Genome | None = None) -> ad.AnnData:
    """Two cell types, each opening its own block of bins (plus noise): learnable structure."""
    genome = genome or Genome.from_chrom_sizes(TOY_SIZES, name="toy")
    bins = genome.bins(5000)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n_cells)
    prob = np.full((2, bins.n_bins), 0.03)
    prob[0, : bins.n_bins // 2] = 0.4
    prob[1, bins.n_bins // 2 :] = 0.4
    X = (rng.random((n_cells, bins.n_bins)) < prob[kind]).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.array(["A", "B"])[kind])},
                       index=[f"cell{i}" for i in range(n_cells)])
    return binned_adata(sp.csr_matrix(X), bins, obs)


def hemato_binned(chroms: tuple[str, ...] | None = None) -> ad.AnnData:
    """The shipped hemato peak matrix (600 cells, hg19) summed into 5 kb bins by peak midpoint,
    optionally on a subset of the chromosomes (a smaller vocabulary for fast CPU tests)."""
    peaks = ad.read_h5ad(data_path("hemato_10x_hg19.h5ad"))
    hg19 = get_genome("hg19")
    genome = hg19 if chroms is None else Genome.from_chrom_sizes(hg19.chrom_sizes, name="hg19", chroms=list(chroms))
    bins = genome.bins(5000)
    chrom = np.array([bins.genome.chrom_index(c) if bins.genome.chrom_index(c) is not None else -1
                      for c in peaks.var["chrom"].astype(str)])
    keep = chrom >= 0
    mid = (peaks.var["start"].to_numpy() + peaks.var["end"].to_numpy()) // 2
    col = bins.bin_ids(chrom[keep], mid[keep])
    onehot = sp.csr_matrix((np.ones(keep.sum()), (np.flatnonzero(keep), col)), shape=(peaks.n_vars, bins.n_bins))
    X = sp.csr_matrix(peaks.X) @ onehot  # cells × bins
    obs = peaks.obs[["cell_type"]].copy()
    return binned_adata(X, bins, obs)


@pytest.fixture(scope="session")
def toy():
    return toy_adata()


@pytest.fixture(scope="session")
def hemato():
    return hemato_binned(("chr1", "chr2"))


@pytest.fixture(scope="session")
def make_toy():
    """Factory: ``make_toy(n_cells, seed=...)`` → a toy cells × bins AnnData."""
    return toy_adata


@pytest.fixture
def one_thread():
    """Bitwise comparisons need one intra-op thread: MKL may pick fewer threads on a loaded machine
    (dynamic threading), which changes summation order and the last bit of a loss."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_RECIPE_KEYS = {"e1_init", "contrastive_neighbors", "state_class_weights"}
_BATCH_KEYS = {"contrastive_drop": "contrastive_drop", "contrastive_neighbor_add": "neighbor_add",
               "mask_fraction": "mask_fraction"}


def make_recipe(*, preset="tiny", max_steps=1000, lr=None, warmup_steps=None, batch_size=None,
                max_tokens_per_batch=16384, val_fraction=0.05, val_every_n_steps=None, ckpt_every_n_steps=500,
                log_every_n_steps=10, num_workers=0, batch_key=None, overrides=None, seed=0, progress_bar=False):
    """A PretrainRecipe from flat keyword options (the defaults are the recipe's)."""
    from atacformer.train import PretrainRecipe

    r = PretrainRecipe(preset=preset, seed=seed)
    model, batch, top = dict(r.model), {}, {}
    for key, value in (overrides or {}).items():
        if key in _RECIPE_KEYS:
            top[key] = value
        elif key in _BATCH_KEYS:
            batch[_BATCH_KEYS[key]] = value
        else:
            model[key] = value
    return r.replace(model=model, batch=batch, optimizer={"lr": lr, "warmup_steps": warmup_steps},
                     trainer={"max_steps": max_steps, "ckpt_every_n_steps": ckpt_every_n_steps,
                              "val_every_n_steps": val_every_n_steps, "log_every_n_steps": log_every_n_steps,
                              "progress_bar": progress_bar},
                     data={"batch_size": batch_size, "max_tokens": max_tokens_per_batch, "val_fraction": val_fraction,
                           "num_workers": num_workers, "batch_key": batch_key}, **top)


@pytest.fixture(scope="session")
def run_pretrain():
    """``run_pretrain(inputs, out_dir=..., resume=None, trainer_kwargs=None, **flat_options)`` → model."""
    from atacformer.train import pretrain

    def run(inputs, *, out_dir, resume=None, trainer_kwargs=None, accelerator=None, devices=None, **kw):
        tk = dict(trainer_kwargs or {})
        tk.update({k: v for k, v in (("accelerator", accelerator), ("devices", devices)) if v is not None})
        return pretrain(inputs, out_dir=out_dir, recipe=make_recipe(**kw), resume=resume, trainer_kwargs=tk)
    return run


@pytest.fixture(scope="session")
def recipe_of():
    """``recipe_of(**flat_options)`` → a PretrainRecipe (see :func:`make_recipe`)."""
    return make_recipe
