"""Pretraining with Lightning: module, data module and the one-call :func:`pretrain`.

>>> model = pretrain(["corpus/"], preset="tiny", max_steps=1000, out_dir="model/")   # CPU or GPU(s)
>>> model = pretrain("cells.h5ad", preset="small", devices=8, strategy="ddp", out_dir="model/")
"""

from .data import AtacformerDataModule
from .module import AtacformerModule, parameter_groups, warmup_cosine
from .plot import plot_training_curve, read_metrics
from .pretrain import pretrain, weights_digest

__all__ = [
    "AtacformerDataModule", "AtacformerModule", "parameter_groups", "plot_training_curve", "pretrain",
    "read_metrics", "warmup_cosine", "weights_digest",
]
