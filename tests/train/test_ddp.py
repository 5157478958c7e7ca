"""A real 2-process DDP pretraining run on CPU (gloo), launched through the CLI like a user would."""

import json
import subprocess
import sys

import pandas as pd

from atacformer.models import Atacformer
from atacformer.tokenize import write_corpus
from atacformer.train import weights_digest


def _pretrain_two_ranks(cwd, inputs, out, *args: str) -> list[dict]:
    """``atacformer pretrain`` with 2 DDP ranks on CPU (gloo), 4 cells per batch; returns logs/ranks.json."""
    cmd = [sys.executable, "-m", "atacformer", "pretrain", str(inputs), "-o", str(out), "--devices", "2",
           "--strategy", "ddp", "--accelerator", "cpu", "--batch-size", "4", "--workers", "0", "--no-progress", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "logs" / "ranks.json").read_text())


def test_ddp_two_ranks_read_own_shards_and_agree(tmp_path, make_toy):
    adata = make_toy(40, seed=5)
    adata.obs["cell_type"] = pd.Categorical(["A"] * 20 + ["B"] * 20)  # shard 0 is all A, shard 1 all B
    write_corpus(adata, tmp_path / "corpus", cells_per_shard=20, row_group_size=20, progress=False)
    out = tmp_path / "model"
    ranks = _pretrain_two_ranks(tmp_path, tmp_path / "corpus", out, "--max-steps", "4", "--log-every", "1",
                                "--ckpt-every", "2", "--seed", "3")
    assert [r["rank"] for r in ranks] == [0, 1]
    # both ranks ended with bitwise-identical weights, equal to the saved model's
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert weights_digest(Atacformer.from_pretrained(out)) == ranks[0]["weights_sha256"]
    # each rank trained on its own shard: 4 steps × 4 cells, one label each, different between ranks
    labels = [set(r["labels"]) for r in ranks]
    assert all(len(s) == 1 for s in labels) and labels[0] != labels[1]
    assert all(r["batches"] == 4 and r["cells"] == 16 for r in ranks)
    assert (out / "checkpoints" / "step=2.ckpt").exists()


def test_ddp_with_batch_key_on_an_h5ad(tmp_path, make_toy):
    """In-memory cells with the default recipe (contrastive views, SVD init) and one sample per batch,
    split into blocks across two ranks: both ranks train and end with identical weights."""
    adata = make_toy(48, seed=6)
    adata.obs["sample"] = ["s1"] * 30 + ["s2"] * 18
    adata.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "model"
    ranks = _pretrain_two_ranks(tmp_path, tmp_path / "cells.h5ad", out, "--batch-key", "sample", "--max-steps", "3",
                                "--val-fraction", "0", "--seed", "1")
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert all(r["batches"] == 3 for r in ranks)
    assert Atacformer.from_pretrained(out).config.contrastive_weight == 5.0
