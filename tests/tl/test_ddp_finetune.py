"""A real 2-process DDP fine-tune on CPU (gloo): both ranks train on their own cells and end equal."""

import json
import subprocess
import sys
import textwrap

from atacformer.models import Atacformer
from atacformer.train import weights_digest

from .conftest import toy_adata, toy_model

SCRIPT = """
import sys

import anndata as ad
import torch

from atacformer.models import Atacformer
from atacformer.tl import finetune
from atacformer.train import FinetuneRecipe

torch.set_num_threads(1)
torch.manual_seed(0)  # the new head starts equal on both ranks
adata = ad.read_h5ad(sys.argv[1])
recipe = FinetuneRecipe(epochs=2, patience=10, batch_size=8)
tuned = finetune(adata, Atacformer.from_pretrained(sys.argv[2]), recipe=recipe, out_dir=sys.argv[3],
                 trainer_kwargs={"devices": 2, "strategy": "ddp", "accelerator": "cpu"})
if torch.distributed.get_rank() == 0:
    tuned.save_pretrained(sys.argv[4])
"""


def test_finetune_on_two_ddp_ranks(tmp_path):
    toy_adata(n_per_type=12).write_h5ad(tmp_path / "cells.h5ad")
    toy_model().save_pretrained(tmp_path / "model")
    (tmp_path / "ft.py").write_text(textwrap.dedent(SCRIPT))
    run = subprocess.run([sys.executable, str(tmp_path / "ft.py"), str(tmp_path / "cells.h5ad"),
                          str(tmp_path / "model"), str(tmp_path / "run"), str(tmp_path / "tuned")],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = json.loads((tmp_path / "run" / "logs" / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # gradients were all-reduced
    # each rank saw its own half of the training cells, the same number of batches
    assert ranks[0]["batches"] == ranks[1]["batches"] > 0
    assert all(0 < r["cells"] <= 8 * r["batches"] for r in ranks)
    tuned = Atacformer.from_pretrained(tmp_path / "tuned")
    assert tuned.config.cell_type_names == ["A", "B", "C"]
    assert weights_digest(tuned) != weights_digest(toy_model())
