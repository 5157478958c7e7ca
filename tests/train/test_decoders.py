"""Pretraining with each decoder (loss falls), the contrastive decoder, and ``--decoder``/``--region-classes``."""

import numpy as np
import pandas as pd
import pytest

from atacformer.cli import main
from atacformer.models import Atacformer
from atacformer.train import read_metrics

FAST = dict(preset="tiny", log_every_n_steps=1, progress_bar=False, warmup_steps=3, lr=1e-2, val_fraction=0.0,
            ckpt_every_n_steps=None)
TOY_CLASSES = np.array(["promoter", "intron", "intergenic"])


def _with_classes(adata):
    adata = adata.copy()
    adata.var["region_class"] = pd.Categorical(TOY_CLASSES[np.arange(adata.n_vars) % 3], categories=TOY_CLASSES)
    return adata


@pytest.mark.parametrize("decoder, classes, contrastive_decoder", [
    ("chromosome", None, 0.0),
    ("region-class", None, 0.0),
    ("class-x-chromosome", None, 1.0),
    ("cross-attention", None, 0.0),
    ("cross-attention", "annotation", 1.0),
])
def test_pretraining_loss_decreases_per_decoder(tmp_path, make_toy, one_thread, run_pretrain, recipe_of, decoder,
                                                classes, contrastive_decoder):
    from atacformer.train import pretrain

    recipe = recipe_of(**FAST, max_steps=40, batch_size=16,
                       overrides=dict(decoder=decoder, contrastive_decoder_weight=contrastive_decoder))
    model = pretrain(_with_classes(make_toy(64)), out_dir=tmp_path, recipe=recipe.replace(region_classes=classes))
    assert model.config.decoder == decoder
    assert model.config.region_classes == ([] if decoder in ("chromosome", "cross-attention") and classes is None
                                           else list(TOY_CLASSES))
    m = read_metrics(tmp_path / "logs")
    state = m["train/state"].to_numpy()
    assert state[-10:].mean() < 0.85 * state[:5].mean()
    if contrastive_decoder:
        part = m["train/contrastive_decoder"].to_numpy()
        assert part[-10:].mean() < part[:5].mean()
    loaded = Atacformer.from_pretrained(tmp_path)
    assert np.array_equal(loaded.state_decoder.bin_region.numpy(), model.state_decoder.bin_region.numpy())
    if decoder == "region-class":  # the per-bin regions are the data's classes
        assert np.array_equal(loaded.state_decoder.bin_region.numpy(), np.arange(model.config.n_bins) % 3)


def test_cli_decoder_and_region_classes_file(tmp_path, make_toy):
    adata = make_toy(32)
    cells = tmp_path / "cells.h5ad"
    adata.write_h5ad(cells)
    tsv = tmp_path / "classes.tsv"
    names = adata.var_names[:50]
    tsv.write_text("".join(f"{n}\t{'promoter' if i % 2 else 'CTCF'}\n" for i, n in enumerate(names)))
    base = ["pretrain", str(cells), "--max-steps", "3", "--batch-size", "8", "--no-progress", "--accelerator", "cpu",
            "--ckpt-every", "100", "--region-classes", str(tsv)]
    out = tmp_path / "model"
    assert main([*base, "--decoder", "class-x-chromosome", "--contrastive-decoder-weight", "0.5", "-o", str(out)]) == 0
    model = Atacformer.from_pretrained(out)
    c = model.config
    assert (c.decoder, c.region_classes, c.contrastive_decoder_weight) == (
        "class-x-chromosome", ["promoter", "CTCF", "other"], 0.5)
    chrom = np.repeat([0, 1], [120, 80])
    codes = np.full(200, 2)
    codes[:50] = np.where(np.arange(50) % 2, 0, 1)
    assert np.array_equal(model.state_decoder.bin_region.numpy(), chrom * 3 + codes)
    assert model.vocab.n_eos == 6 and model.contrastive_decoder is not None


def test_cli_chromosome_decoder_refuses_region_classes(tmp_path, make_toy, capsys):
    cells = tmp_path / "cells.h5ad"
    make_toy(16).write_h5ad(cells)
    rc = main(["pretrain", str(cells), "--max-steps", "1", "--batch-size", "8", "--no-progress", "--accelerator", "cpu",
               "--decoder", "chromosome", "--region-classes", "annotation", "-o", str(tmp_path / "m")])
    assert rc == 2 and "chromosome decoder uses no region classes" in capsys.readouterr().err


def test_class_decoder_on_a_genome_without_annotation_is_a_clear_error(tmp_path, make_toy, recipe_of):
    from atacformer.train import pretrain

    recipe = recipe_of(**FAST, max_steps=1, batch_size=8, overrides=dict(decoder="region-class"))
    with pytest.raises(ValueError, match="no built-in gene annotation"):
        pretrain(make_toy(16), out_dir=tmp_path, recipe=recipe)


@pytest.mark.parametrize("decoder", ["class-x-chromosome", "cross-attention"])
def test_finetune_and_embed_a_class_model(tmp_path, make_toy, decoder):
    """tl.finetune's data module makes sentences with the model's vocabulary (its <eos> tokens)."""
    import torch

    from atacformer.genome import BinIndex
    from atacformer.models import AtacformerConfig
    from atacformer.tl import embed, finetune
    from atacformer.tokenize import BinVocab
    from atacformer.train import FinetuneRecipe

    adata = _with_classes(make_toy(32))
    vocab = BinVocab.from_bins(BinIndex.from_uns(adata.uns))
    torch.manual_seed(0)
    cfg = AtacformerConfig.from_preset("tiny", vocab, decoder=decoder, region_classes=list(TOY_CLASSES))
    model = Atacformer(cfg)
    model.set_region_classes(np.arange(vocab.n_bins) % 3)
    tuned = finetune(adata, model, labels_key="cell_type", out_dir=tmp_path,
                     recipe=FinetuneRecipe(epochs=1, batch_size=8, state_loss_weight=1.0))
    assert tuned.vocab.decoder == decoder and tuned.config.n_cell_types == 2
    embed(adata, tuned, key_added="X_af", progress=False)
    assert adata.obsm["X_af"].shape == (32, 32) and np.isfinite(adata.obsm["X_af"]).all()
