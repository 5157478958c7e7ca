"""Training: one Lightning engine (:mod:`~atacformer.train.engine`), the objectives as training plans
(:mod:`~atacformer.train.plans`), the one batcher, the data module and the recipes.

>>> model = pretrain("cells.h5ad", out_dir="model/")                                  # doctest: +SKIP
>>> recipe = PretrainRecipe(preset="small").replace(trainer={"max_steps": 5000})     # doctest: +SKIP
>>> model = pretrain(["corpus/"], out_dir="m/", recipe=recipe,
...                  trainer_kwargs={"devices": 8, "strategy": "ddp"})  # doctest: +SKIP
"""

from .batcher import BatchSettings, encode_cells
from .data import AtacformerDataModule, DataSettings
from .engine import (
    OptimizerSettings,
    TrainerSettings,
    TrainingPlan,
    fit,
    parameter_groups,
    warmup_cosine,
    weights_digest,
)
from .plans import AdversarialPlan, ClassifierPlan, PretrainPlan, QueryPlan
from .plot import plot_training_curve, read_metrics
from .pretrain import pretrain
from .recipes import FinetuneRecipe, IntegrateRecipe, PretrainRecipe, QueryRecipe

__all__ = [
    "AdversarialPlan", "AtacformerDataModule", "BatchSettings", "ClassifierPlan", "DataSettings", "FinetuneRecipe",
    "IntegrateRecipe", "OptimizerSettings", "PretrainPlan", "PretrainRecipe", "QueryPlan", "QueryRecipe",
    "TrainerSettings", "TrainingPlan", "encode_cells", "fit", "parameter_groups", "plot_training_curve", "pretrain",
    "read_metrics", "warmup_cosine", "weights_digest",
]
