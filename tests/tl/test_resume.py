"""Exact resume of fine-tuning and integration: run N epochs into A; resume the same run from A's
mid-run checkpoint into B; the losses after the checkpoint and the final weights are equal bit for bit."""

import json

import numpy as np
import pytest
import torch

from atacformer.tl import finetune, integrate_model
from atacformer.train import (
    FinetuneRecipe,
    IntegrateRecipe,
    read_metrics,
    weights_digest,
)

from .conftest import toy_adata, toy_model


@pytest.fixture
def one_thread():
    """Bitwise comparisons need one intra-op thread (a loaded machine may change the summation order)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _final_digest(out) -> str:
    return json.loads((out / "logs" / "ranks.json").read_text())[0]["weights_sha256"]


def _compare_after(a_dir, b_dir, k: int, columns: list[str]) -> None:
    a, b = read_metrics(a_dir / "logs"), read_metrics(b_dir / "logs")
    assert b["step"].min() == k and b["step"].max() == a["step"].max()
    after = a[a["step"] >= k].reset_index(drop=True)
    for col in columns:
        np.testing.assert_array_equal(after[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    # the first part did train (the comparison is not between two untouched models)
    before = a[a["step"] < k]["train/loss"].to_numpy()
    assert len(before) and not np.array_equal(before[: len(after)], after["train/loss"].to_numpy()[: len(before)])


def test_finetune_resumes_exactly(tmp_path, one_thread):
    adata = toy_adata(n_per_type=12)  # 36 cells: 30 train (4 batches of 8), 6 validation
    # augmentation, masking and dropout all draw random numbers: resume must replay them
    recipe = FinetuneRecipe(epochs=4, patience=100, batch_size=8, val_fraction=0.17, dropout=0.2,
                            state_loss_weight=0.5)
    torch.manual_seed(0)  # the new head's initialisation
    full = finetune(adata, toy_model(), recipe=recipe, out_dir=tmp_path / "A")
    info_a = adata.uns["atacformer_finetune"]
    steps = -(-info_a["n_train"] // 8)  # batches per epoch
    ckpts = sorted(p.name for p in (tmp_path / "A" / "checkpoints").iterdir())
    assert ckpts == sorted(["last.ckpt", *(f"step={steps * e}.ckpt" for e in range(1, 5))])
    k = 2 * steps
    # the checkpoint's weights win over those of the model passed in
    resumed = finetune(adata, toy_model(seed=5), recipe=recipe, out_dir=tmp_path / "B",
                       resume=tmp_path / "A" / "checkpoints" / f"step={k}.ckpt")
    _compare_after(tmp_path / "A", tmp_path / "B", k,
                   ["train/loss", "train/cell_type", "train/cell_type_accuracy", "val/loss", "val/macro_f1"])
    assert _final_digest(tmp_path / "A") == _final_digest(tmp_path / "B")
    info_b = adata.uns["atacformer_finetune"]
    assert info_a["best_epoch"] >= 2  # the toy data keep improving: the best epoch lies after the checkpoint
    assert info_b["best_epoch"] == info_a["best_epoch"] and info_b["best_val_loss"] == info_a["best_val_loss"]
    assert weights_digest(full) == weights_digest(resumed)  # the returned (best-epoch) models


def test_integrate_resumes_exactly(tmp_path, one_thread):
    adata = toy_adata(n_per_type=8, batch_shift=True)  # 24 cells: 3 batches of 8 per epoch
    model = toy_model(contrastive_weight=1.0)
    recipe = IntegrateRecipe(epochs=4, batch_size=8, n_neighbors=3)  # MNN views recomputed every epoch
    torch.manual_seed(0)  # the discriminator's initialisation
    full, hist_a = integrate_model(adata, model, batch_key="donor", recipe=recipe, out_dir=tmp_path / "A")
    k = 2 * 3
    assert (tmp_path / "A" / "checkpoints" / f"step={k}.ckpt").exists()
    resumed, hist_b = integrate_model(adata, model, batch_key="donor", recipe=recipe, out_dir=tmp_path / "B",
                                      resume=tmp_path / "A" / "checkpoints" / f"step={k}.ckpt")
    _compare_after(tmp_path / "A", tmp_path / "B", k,
                   ["train/loss", "train/state", "train/contrastive", "train/discriminator"])
    assert weights_digest(full) == weights_digest(resumed) == _final_digest(tmp_path / "B")
    assert (hist_a["contrastive"] > 0).all()
    np.testing.assert_array_equal(hist_a[hist_a["epoch"] >= 2]["state"].to_numpy(), hist_b["state"].to_numpy())
