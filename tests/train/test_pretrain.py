"""End-to-end pretraining on CPU: outputs, exact resume, and learning on the shipped hemato cells."""

import numpy as np
import pytest
import torch

from atacformer.models import Atacformer
from atacformer.train import read_metrics, weights_digest

FAST = dict(preset="tiny", log_every_n_steps=1, progress_bar=False, warmup_steps=2, lr=2e-3)


def test_resume_gives_identical_subsequent_losses(tmp_path, make_toy, one_thread, run_pretrain):
    """2N steps in one go vs. N steps, then resume from the step-N checkpoint: same losses after N."""
    adata = make_toy(48)
    kw = dict(FAST, max_steps=8, ckpt_every_n_steps=4, max_tokens_per_batch=700, val_every_n_steps=4,
              val_fraction=0.25, num_workers=2)
    full = run_pretrain(adata, out_dir=tmp_path / "full", **kw)
    ckpt = tmp_path / "full" / "checkpoints" / "step=4.ckpt"
    assert ckpt.exists() and (tmp_path / "full" / "checkpoints" / "last.ckpt").exists()
    resumed = run_pretrain(adata, out_dir=tmp_path / "resumed", resume=ckpt, **kw)

    a, b = read_metrics(tmp_path / "full" / "logs"), read_metrics(tmp_path / "resumed" / "logs")
    assert b["step"].min() == 4 and list(a["step"]) == list(range(8))
    after = a[a["step"] >= 4].reset_index(drop=True)
    for col in ("train/loss", "train/state", "train/cell_type", "val/loss", "val/auroc_removed"):
        np.testing.assert_array_equal(after[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    assert weights_digest(full) == weights_digest(resumed)
    # the first half did change the weights (the comparison above is not between two untrained models)
    assert not np.array_equal(a["train/loss"].to_numpy()[:4], after["train/loss"].to_numpy())


def test_pretrain_outputs_and_logs(tmp_path, make_toy, run_pretrain):
    out = tmp_path / "model"
    model = run_pretrain(make_toy(40), out_dir=out, max_steps=3, batch_size=8, ckpt_every_n_steps=2, **FAST)
    for name in ("config.json", "model.safetensors", "vocab.json", "training_curve.png", "logs/ranks.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt", "step=2.ckpt"]
    loaded = Atacformer.from_pretrained(out)
    assert weights_digest(loaded) == weights_digest(model)
    assert loaded.config.cell_type_names == ["A", "B"] and loaded.config.n_cell_types == 2
    m = read_metrics(out / "logs")
    for col in ("train/loss", "train/state", "train/cell_type", "train/loss_state0", "train/loss_state2",
                "train/auroc_removed", "train/auprc_removed", "train/lr"):
        assert col in m and m[col].notna().all(), col
    assert m["train/lr"].iloc[0] < m["train/lr"].iloc[1]  # warm-up
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_last_needs_a_checkpoint(tmp_path, make_toy, run_pretrain):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_pretrain(make_toy(16), out_dir=tmp_path, resume="last", max_steps=1, batch_size=8, **FAST)


def test_an_existing_run_is_refused_and_other_runs_cannot_be_resumed(tmp_path, make_toy, run_pretrain):
    out = tmp_path / "m"
    kw = dict(FAST, max_steps=2, batch_size=8, ckpt_every_n_steps=1, val_fraction=0.0)
    run_pretrain(make_toy(16), out_dir=out, **kw)
    with pytest.raises(FileExistsError, match="already holds a model"):
        run_pretrain(make_toy(16), out_dir=out, **kw)
    with pytest.raises(ValueError, match="belongs to another run"):  # other data
        run_pretrain(make_toy(20, seed=3), out_dir=out, resume="last", **kw)
    with pytest.raises(ValueError, match="belongs to another run"):  # another recipe
        run_pretrain(make_toy(16), out_dir=out, resume="last", **{**kw, "lr": 1e-3})
    run_pretrain(make_toy(16), out_dir=out, resume="last", **{**kw, "max_steps": 3})  # a longer schedule is fine


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    from atacformer.train.engine import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="not a readable atacformer checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "evil.ckpt").read_bytes()[:20])
    with pytest.raises(ValueError, match="cut.ckpt"):
        load_checkpoint(tmp_path / "cut.ckpt")


def test_loss_decreases_on_hemato(tmp_path, hemato, run_pretrain):
    """The shipped hemato cells (chr1–2, 5 kb bins): the loss falls and cell types become predictable."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = tmp_path / "hemato"
    run_pretrain(hemato, out_dir=out, max_steps=60, batch_size=16, val_fraction=0.2, val_every_n_steps=60,
             ckpt_every_n_steps=1000,  # the thresholds below are for fixed weights, not pretrain's balanced default
             overrides=dict(dropout=0.0, state0_sample_rate=0.02, state_class_weights=(1.0, 10.0, 10.0),
                            contrastive_drop=None,
                            contrastive_weight=0.0, decoder_bins="all", e1_init="random"),  # not the recipe
             **{**FAST, "lr": 3e-3, "warmup_steps": 5})
    m = read_metrics(out / "logs")
    loss = m["train/loss"].to_numpy()
    assert loss[-10:].mean() < 0.7 * loss[:5].mean()
    state = m["train/state"].to_numpy()
    assert state[-10:].mean() < 0.1 * state[:5].mean()  # the masked-bin 3-state loss
    assert m["train/cell_type"].to_numpy()[-10:].mean() < np.log(6) - 0.08  # better than chance (6 types)
    val = m.dropna(subset=["val/loss"]).iloc[-1]
    assert val["val/cell_type"] < np.log(6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_gpu_without_cuda_is_a_clear_error(tmp_path, make_toy, run_pretrain):
    with pytest.raises(ValueError, match="CUDA is not available"):
        run_pretrain(make_toy(8), out_dir=tmp_path, accelerator="gpu", max_steps=1, batch_size=4, **FAST)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pretrain_on_gpu_uses_bf16(tmp_path, make_toy, run_pretrain):
    model = run_pretrain(make_toy(32), out_dir=tmp_path, accelerator="gpu", devices=1, max_steps=4, batch_size=8,
                         **FAST)
    assert next(model.parameters()).dtype == torch.float32  # bf16 autocast, fp32 master weights
    m = read_metrics(tmp_path / "logs")
    assert np.isfinite(m["train/loss"]).all() and len(m) == 4



def test_continued_pretraining_starts_from_the_given_model(tmp_path, make_toy, recipe_of):
    """``pretrain(init=model)``: the run keeps the model's config (the recipe's preset and overrides are not
    applied) and starts from its weights; data on another genome is refused."""
    from atacformer.genome import Genome
    from atacformer.train import pretrain

    adata = make_toy(40)
    base = pretrain(adata, out_dir=tmp_path / "base", recipe=recipe_of(max_steps=2, batch_size=8, seed=1, **FAST))
    still = {**FAST, "lr": 1e-12}  # the weights cannot move: what comes out is what went in
    more = pretrain(adata, out_dir=tmp_path / "more", init=tmp_path / "base",
                    recipe=recipe_of(max_steps=2, batch_size=8, **{**still, "preset": "small"}))
    fresh = pretrain(adata, out_dir=tmp_path / "fresh", recipe=recipe_of(max_steps=2, batch_size=8, **still))
    assert more.config.to_dict() == base.config.to_dict() and more.config.d_model == base.config.d_model

    def same(m):
        a, b = base.state_dict(), m.state_dict()
        return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)

    assert same(more) and not same(fresh)
    other = make_toy(40, genome=Genome.from_chrom_sizes({"chr1": 500_000}, name="other"))
    with pytest.raises(ValueError, match="genome"):
        pretrain(other, out_dir=tmp_path / "x", recipe=recipe_of(max_steps=2, batch_size=8, **still), init=base)
