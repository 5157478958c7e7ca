"""``atacformer pretrain`` → ``atacformer embed`` round trip on a tiny synthetic .h5ad."""

import logging

import anndata as ad
import numpy as np
import pytest

from atacformer.cli import main
from atacformer.models import Atacformer


def test_cli_pretrain_then_embed(tmp_path, make_toy):
    cells = tmp_path / "cells.h5ad"
    make_toy(32).write_h5ad(cells)
    model_dir = tmp_path / "model"
    rc = main(["pretrain", str(cells), "--preset", "tiny", "--set", "n_layers=1", "--set", "dropout=0.0",
               "--max-steps", "3", "--batch-size", "8", "--workers", "0", "--accelerator", "cpu", "--no-progress",
               "--ckpt-every", "2", "-o", str(model_dir)])
    assert rc == 0
    model = Atacformer.from_pretrained(model_dir)
    assert model.config.n_layers == 1 and model.config.dropout == 0.0 and model.config.d_model == 32

    out = tmp_path / "out" / "embedded.h5ad"
    assert main(["embed", str(model_dir), str(cells), "-o", str(out), "--key-added", "X_af", "--pooling", "mean",
                 "--no-progress"]) == 0
    emb = ad.read_h5ad(out)
    assert emb.obsm["X_af"].shape == (32, 32) and np.isfinite(emb.obsm["X_af"]).all()
    assert emb.uns["X_af"]["pooling"] == "mean" and emb.uns["X_af"]["model"] == str(model_dir)
    assert sorted(p.name for p in out.parent.iterdir()) == ["embedded.h5ad"]  # no temporary left behind

    # resume continues the same run (from last.ckpt) up to the new max steps
    assert main(["pretrain", str(cells), "--max-steps", "4", "--batch-size", "8", "--workers", "0", "--no-progress",
                 "--accelerator", "cpu", "--resume", "last", "-o", str(model_dir)]) == 0
    assert Atacformer.from_pretrained(model_dir).config.n_layers == 1  # the checkpoint's architecture


def test_cli_rejects_bad_set_and_missing_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "x.h5ad", "--set", "novalue", "-o", str(tmp_path)])
    assert main(["embed", str(tmp_path), str(tmp_path / "missing.h5ad"), "-o", str(tmp_path / "o.h5ad")]) == 2
    assert "missing.h5ad" in capsys.readouterr().err


def test_cli_pretrain_batch_key(tmp_path, make_toy, capsys):
    adata = make_toy(24)
    adata.obs["sample"] = np.where(np.arange(24) < 12, "s1", "s2")
    cells = tmp_path / "cells.h5ad"
    adata.write_h5ad(cells)
    base = ["pretrain", str(cells), "--set", "n_layers=1", "--set", "contrastive_weight=1.0", "--max-steps", "2",
            "--batch-size", "6", "--workers", "0", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0"]
    assert main([*base, "--batch-key", "sample", "-o", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert main([*base, "--batch-key", "donor", "-o", str(tmp_path / "m2")]) == 2
    assert "'donor' is not an obs column" in capsys.readouterr().err


def test_cli_pretrain_neighbor_scope(tmp_path, make_toy, caplog):
    adata = make_toy(24)
    adata.obs["sample"] = np.where(np.arange(24) < 12, "s1", "s2")  # the same cell types: the samples mix
    cells = tmp_path / "cells.h5ad"
    adata.write_h5ad(cells)
    base = ["pretrain", str(cells), "--set", "n_layers=1", "--set", "contrastive_weight=1.0", "--max-steps", "1",
            "--batch-size", "6", "--workers", "0", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0",
            "--batch-key", "sample"]
    with caplog.at_level(logging.INFO, logger="atacformer"):
        assert main([*base, "-o", str(tmp_path / "auto")]) == 0
    assert "no batch_key group stands apart" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="atacformer"):
        assert main([*base, "--neighbor-scope", "group", "-o", str(tmp_path / "group")]) == 0
    assert "scope group" in caplog.text and "stands apart" not in caplog.text
