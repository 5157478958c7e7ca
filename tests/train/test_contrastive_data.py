"""Contrastive pretraining data: neighbour table, two-view batches from the data module, exact resume."""

import numpy as np
import scipy.sparse as sp
import torch

from atacformer.train import (
    AtacformerDataModule,
    BatchSettings,
    DataSettings,
    PretrainRecipe,
    read_metrics,
    weights_digest,
)
from atacformer.train.pretrain import set_view_neighbors
from atacformer.train.priors import cell_neighbors


def test_neighbors_match_brute_force_tfidf_cosine(make_toy):
    adata = make_toy(30, seed=5)
    X = (sp.csr_matrix(adata.X) > 0).astype(np.float64).toarray()
    X = X[:, X.sum(0) > 0]
    tfidf = np.log1p(X / X.sum(1, keepdims=True) * (len(X) / X.sum(0)) * 1e4)  # Signac log TF-IDF
    unit = tfidf / np.linalg.norm(tfidf, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    got = cell_neighbors(sp.csr_matrix(adata.X), 4)
    for i in range(len(X)):
        assert set(got[i]) == set(np.argsort(-sim[i], kind="stable")[:4]), i
    kind = adata.obs["cell_type"].to_numpy()
    assert (kind[got] == kind[:, None]).mean() > 0.9  # neighbours share the cell's block of open bins


def test_data_module_adds_views_with_neighbor_bins(make_toy):
    dm = AtacformerDataModule(make_toy(40), data=DataSettings(batch_size=4, val_fraction=0.0), seed=1)
    dm.batch = BatchSettings(contrastive_drop=0.5, neighbor_add=1.0)
    set_view_neighbors(dm, PretrainRecipe(contrastive_neighbors="tfidf"))
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_sentences == 8 and batch.view_cls_index.shape == (4,)
    cu = batch.cu_seqlens.tolist()
    first, views = cu[1] - cu[0], cu[5] - cu[4]
    assert views > first // 2  # half dropped, but a neighbour's bins added on top


def test_contrastive_resume_is_exact(tmp_path, make_toy, one_thread, run_pretrain):
    adata = make_toy(32)
    kw = {"preset": "tiny", "log_every_n_steps": 1, "progress_bar": False, "warmup_steps": 2, "lr": 2e-3,
          "max_steps": 4, "ckpt_every_n_steps": 2, "batch_size": 8, "val_fraction": 0.0,
          "overrides": {"contrastive_weight": 1.0, "contrastive_neighbor_add": 0.5}}
    full = run_pretrain(adata, out_dir=tmp_path / "full", **kw)
    resumed = run_pretrain(adata, out_dir=tmp_path / "res", resume=tmp_path / "full" / "checkpoints" / "step=2.ckpt",
                           **kw)
    a, b = read_metrics(tmp_path / "full" / "logs"), read_metrics(tmp_path / "res" / "logs")
    np.testing.assert_array_equal(a[a["step"] >= 2]["train/contrastive"].to_numpy(), b["train/contrastive"].to_numpy())
    assert weights_digest(full) == weights_digest(resumed)
    assert torch.isfinite(torch.tensor(a["train/contrastive"].to_numpy())).all()
