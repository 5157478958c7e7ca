"""CRAFT on the one engine: paired ATAC + RNA batches, :class:`CraftPlan`, :class:`CraftRecipe`, :func:`fit_craft`.

Paired cells go through the same data module and batcher as every other objective
(:class:`~atacformer.train.AtacformerDataModule`, :class:`~atacformer.train.BatchSettings`,
``collate_cells``): each cell dict carries its ``"row"`` in the ATAC AnnData, and :class:`PairCollate`
gathers the RNA counts of those rows into a :class:`PairedBatch`. Batches (and so masks, dropout and RNA
rows) are a pure function of (seed, rank, batch index), so a resumed CRAFT run is bitwise identical.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ..models import PackedBatch
from ..models.craft import CraftConfig, CraftModel, batch_foscttm
from ..models.rna import RnaEncoderConfig, gene_scale
from .batcher import BatchSettings
from .data import AUTO_BATCH_KEYS, AtacformerDataModule, DataSettings
from .engine import (
    OptimizerSettings,
    TrainerSettings,
    TrainingPlan,
    check_resume,
    fingerprint,
    fit,
    load_checkpoint,
    parameter_groups,
    prepare_out_dir,
    resume_path,
)
from .recipes import PretrainRecipe, _Recipe
from .tuning import freeze

log = logging.getLogger(__name__)

#: What picks the weights CRAFT keeps: the validation cells' in-batch FOSCTTM (lower is better)
BEST_MONITOR = "val/foscttm"


@dataclass
class CraftRecipe(_Recipe):
    """Contrastive RNA–ATAC fine-tuning (:func:`atacformer.tl.craft_train`).

    Parameters
    ----------
    model
        :class:`~atacformer.models.craft.CraftConfig`: RNA encoder, joint-space width, imputation
        likelihood, loss weights (``mask_weight`` > 0 keeps the masked-bin loss of the ATAC encoder).
    optimizer
        AdamW + warm-up/cosine for the new parts (RNA encoder, projections, imputation head).
    atac_lr_ratio
        The pretrained ATAC encoder learns at ``optimizer.lr * atac_lr_ratio``.
    trainer
        :class:`TrainerSettings` (``max_steps``, checkpoint cadence, ...).
    batch_size
        Paired cells per batch (the InfoNCE negatives).
    batch
        How ATAC sentences are made (masking, depth augmentation ``keep``).
    val_fraction
        Share of paired cells held out for validation (0 = none): whole libraries when the ATAC ``obs`` has a
        ``batch``/``sample``/``library``/``donor`` column with ≥ 3 values (the first such; libraries in a seeded
        random order until the share is reached), else random cells. Validated 10 times over the run; the
        weights of the check with the lowest validation FOSCTTM (in-batch) are the ones returned. CRAFT's
        alignment of libraries it has not seen is best early and then degrades while cells of its training
        libraries keep aligning better, so only unseen libraries tell when to stop.
    patience
        Stop after this many validation checks without improvement (None = run ``max_steps``).
    trainable_layers, train_embeddings
        Train only the last n ATAC encoder layers (None = all); the genome-wide bin-ID table only with
        ``train_embeddings``.
    pretrain
        Recipe of the ATAC encoder when none is given (pretrained on the fly from the ATAC cells).
    seed
        Seeds the initialisation, batches, masks and dropout.
    """

    model: CraftConfig = field(default_factory=CraftConfig)
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(
        lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=50, min_lr_ratio=0.1))
    atac_lr_ratio: float = 0.3
    trainer: TrainerSettings = field(default_factory=lambda: TrainerSettings(
        max_steps=1500, ckpt_every_n_steps=500, log_every_n_steps=10))
    batch_size: int = 256
    batch: BatchSettings = field(default_factory=lambda: BatchSettings(mask_fraction=0.1))
    val_fraction: float = 0.1
    patience: int | None = 3
    trainable_layers: int | None = None
    train_embeddings: bool = False
    pretrain: PretrainRecipe = field(default_factory=lambda: PretrainRecipe().replace(
        trainer={"max_steps": 1000, "ckpt_every_n_steps": None}, data={"batch_size": 64, "val_fraction": 0.0}))
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = CraftConfig(**self.model)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (InfoNCE needs negatives), got {self.batch_size}")
        if self.atac_lr_ratio < 0 or not 0 <= self.val_fraction < 1:
            raise ValueError("need atac_lr_ratio >= 0 and 0 <= val_fraction < 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")

    @classmethod
    def quick(cls, max_steps: int = 4, seed: int = 0) -> CraftRecipe:
        """A few steps of a small network (tests, smoke runs)."""
        small = CraftConfig(rna=RnaEncoderConfig(d_model=32, d_ff=32, n_layers=1), shared_dim=16, proj_hidden=32,
                            impute_hidden=32)
        return cls(model=small, batch_size=16, seed=seed, val_fraction=0.0,
                   trainer=TrainerSettings(max_steps=max_steps, ckpt_every_n_steps=None, log_every_n_steps=1),
                   pretrain=PretrainRecipe.demo(seed).replace(trainer={"max_steps": max_steps},
                                                              data={"batch_key": None}))


# ---------------------------------------------------------------------------------------------- batches
@dataclass
class PairedBatch:
    """B paired cells: the ATAC batch (the one batcher's) and the RNA counts of the same cells, same order."""

    atac: PackedBatch
    rna: torch.Tensor  # (B, G) float32 raw counts in the CRAFT gene order

    @property
    def num_cells(self) -> int:
        return self.atac.num_cells

    @property
    def num_tokens(self) -> int:
        return self.atac.num_tokens

    def label(self, column: str) -> torch.Tensor:
        """(B,) codes of label ``column`` of the ATAC side (all -1 when absent)."""
        return self.atac.label(column)

    @property
    def cell_type(self) -> torch.Tensor:
        return self.atac.cell_type

    def to(self, device, *, non_blocking: bool = False) -> PairedBatch:
        return PairedBatch(self.atac.to(device, non_blocking=non_blocking),
                           self.rna.to(device, non_blocking=non_blocking))


class PairCollate:
    """Cells → :class:`PairedBatch`: the ATAC batch by the one batcher (``batch.collate``), plus the RNA
    counts of the cells' ``"row"``. ``packed=False`` pads the ATAC batch (one SDPA call: faster on CPU)."""

    def __init__(self, batch: BatchSettings, vocab, max_length: int, rna: sp.csr_matrix, *, packed: bool = True):
        self.batch, self.vocab, self.max_length, self.rna, self.packed = batch, vocab, max_length, rna, packed

    def __call__(self, cells: list[dict], rng: np.random.Generator) -> PairedBatch:
        atac = self.batch.collate(cells, self.vocab, rng, max_length=self.max_length, packed=self.packed)
        rows = np.fromiter((c["row"] for c in cells), dtype=np.int64, count=len(cells))
        return PairedBatch(atac, torch.from_numpy(self.rna[rows].toarray().astype(np.float32, copy=False)))


class PairedDataModule(AtacformerDataModule):
    """:class:`AtacformerDataModule` over paired cells: row ``i`` of ``rna`` (cells × CRAFT genes raw
    counts) is the RNA profile of ATAC cell ``i``. Other keywords as :class:`AtacformerDataModule`."""

    def __init__(self, atac: ad.AnnData, rna: sp.spmatrix | np.ndarray, **kwargs):
        super().__init__(atac, codes=kwargs.pop("codes", {}), **kwargs)
        if rna.shape[0] != atac.n_obs:
            raise ValueError(f"{rna.shape[0]} RNA rows for {atac.n_obs} ATAC cells: pair the cells first")
        self.rna = sp.csr_matrix(rna, dtype=np.float32)

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "rna_shape": list(self.rna.shape), "rna_nnz": int(self.rna.nnz),
                "rna_total": float(self.rna.sum())}

    def _loader(self, train: bool):
        loader = super()._loader(train)
        batch = self.batch if train else (self.val_batch or dataclasses.replace(self.batch, keep=None))
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        loader.dataset.collate = PairCollate(batch, self.vocab, self.max_length, self.rna, packed=on_gpu)
        return loader


# ---------------------------------------------------------------------------------------------- the plan
class CraftPlan(TrainingPlan):
    """The CRAFT objective: :meth:`CraftModel.forward` on paired batches (InfoNCE + imputation likelihood
    [+ masked-bin loss]); logs each loss part, the temperature, the in-batch top-1 partner accuracy and the
    in-batch FOSCTTM (share of other cells closer than the true partner, both directions).
    The ATAC encoder learns at ``atac_lr_ratio`` × the rate of the new parts."""

    def __init__(self, model: CraftModel, *, atac_lr_ratio: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        self.atac_lr_ratio = float(atac_lr_ratio)

    def param_groups(self) -> list[dict]:
        return parameter_groups(self, self.optim.weight_decay,
                                lr_scale=lambda n: self.atac_lr_ratio if n.startswith("model.atac.") else 1.0)

    def step(self, batch: PairedBatch, stage: str):
        out = self.model(batch.atac, batch.rna)
        logs = dict(out.losses)
        logs["logit_scale"] = out.logit_scale
        with torch.no_grad():
            sim = out.atac_emb @ out.rna_emb.T  # (B, B)
            target = torch.arange(sim.shape[0], device=sim.device)
            logs["top1"] = 0.5 * ((sim.argmax(1) == target).float().mean() + (sim.argmax(0) == target).float().mean())
            logs["foscttm"] = batch_foscttm(sim)
        return out.loss, logs


def _freeze(model: CraftModel, recipe: CraftRecipe) -> None:
    freeze(model.atac, trainable_last_layers=recipe.trainable_layers, train_embeddings=recipe.train_embeddings)
    model.atac.decoder.requires_grad_(recipe.model.mask_weight > 0)  # unused without the masked-bin loss
    model.atac.heads.requires_grad_(False)  # label heads: not trained by the contrastive objective


def library_split(obs, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(train rows, validation rows) holding out whole libraries — of the first ``obs`` column of
    :data:`~atacformer.train.data.AUTO_BATCH_KEYS` with ≥ 3 values — in a seeded random order until at least
    ``fraction`` of the cells (two libraries always stay for training); None = no such column (split cells)."""
    key = next((k for k in AUTO_BATCH_KEYS if k in obs and not obs[k].isna().any() and obs[k].nunique() >= 3), None)
    if key is None or fraction <= 0:
        return None
    values = obs[key].astype(str).to_numpy()
    held, n = [], 0
    for lib in np.random.default_rng([seed, 11]).permutation(np.unique(values))[:-2]:
        held.append(lib)
        n += int((values == lib).sum())
        if n >= fraction * len(values):
            break
    val = np.isin(values, held)
    log.info("CRAFT validation: %s %s (%d cells)", key, ", ".join(held), int(val.sum()))
    return np.flatnonzero(~val), np.flatnonzero(val)


def _best_checkpoint(out_dir: Path, recipe: CraftRecipe) -> list:
    """Callbacks that keep the weights of the lowest ``val/foscttm`` (and stop after ``recipe.patience`` checks
    without improvement); none without validation cells."""
    if recipe.val_fraction <= 0:
        return []
    best = ModelCheckpoint(dirpath=out_dir / "best", filename="best", monitor=BEST_MONITOR, mode="min", save_top_k=1)
    if recipe.patience is None:
        return [best]
    return [best, EarlyStopping(monitor=BEST_MONITOR, mode="min", patience=recipe.patience, min_delta=1e-4)]


def fit_craft(model: CraftModel, atac: ad.AnnData, rna: sp.spmatrix, *, recipe: CraftRecipe, out_dir: str | Path,
              resume: str | Path | None = None, overwrite: bool = False,
              trainer_kwargs: dict | None = None) -> CraftModel:
    """Train a copy of ``model`` on paired cells with :class:`CraftPlan` into ``out_dir``
    (``checkpoints/``, ``logs/``, ``training_curve.png``); the caller saves the returned model.

    Parameters
    ----------
    model
        A :class:`CraftModel` (its ATAC encoder pretrained); not changed.
    atac
        Cells × bins of the model's genome and bin size.
    rna
        Raw counts, cells (same order as ``atac``) × ``model.genes``.
    recipe
        :class:`CraftRecipe`.
    out_dir
        Run folder (a folder holding another run is refused unless ``overwrite`` or ``resume``).
    resume
        ``"last"`` or a checkpoint: continue exactly (the checkpoint's weights win over ``model``'s).
    overwrite
        Replace an earlier run in ``out_dir``.
    trainer_kwargs
        ``lightning.Trainer`` options.

    Returns
    -------
    The trained :class:`CraftModel` (eval mode).
    """
    out_dir = Path(out_dir)
    ckpt_path = resume_path(resume, out_dir)
    prepare_out_dir(out_dir, resume=ckpt_path, overwrite=overwrite)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    model = copy.deepcopy(model).train()
    data = PairedDataModule(atac, rna,
                            data=DataSettings(batch_size=recipe.batch_size, val_fraction=recipe.val_fraction),
                            batch=recipe.batch, max_length=model.atac.config.max_length, seed=recipe.seed,
                            split=library_split(atac.obs, recipe.val_fraction, seed=recipe.seed))
    run_info = {"task": "craft", "data": fingerprint(data.fingerprint()),
                "recipe": fingerprint({k: v for k, v in recipe.to_dict().items() if k not in ("trainer", "pretrain")})}
    if ckpt_path is not None:
        check_resume(load_checkpoint(ckpt_path), ckpt_path, run_info)
    if hasattr(model.rna, "set_gene_scale") and ckpt_path is None:
        model.rna.set_gene_scale(gene_scale(data.rna[data.train_idx], scale_factor=recipe.model.rna.scale_factor))
    _freeze(model, recipe)
    plan = CraftPlan(model, atac_lr_ratio=recipe.atac_lr_ratio, optimizer=recipe.optimizer,
                     max_steps=recipe.trainer.max_steps, seed=recipe.seed,
                     run_info={**run_info, "config": model.config.to_dict()})
    settings = recipe.trainer
    if settings.val_every_n_steps is None and recipe.val_fraction > 0:
        settings = dataclasses.replace(settings, val_every_n_steps=max(1, settings.max_steps // 10))
    best = _best_checkpoint(out_dir, recipe)
    fit(plan, data, out_dir=out_dir, settings=settings, resume=ckpt_path, trainer_kwargs=trainer_kwargs,
        callbacks=best)
    if best and best[0].best_model_path:
        plan.load_state_dict(load_checkpoint(best[0].best_model_path)["state_dict"])
        log.info("CRAFT: weights of the best validation check (%s %.4f, %s)", BEST_MONITOR,
                 float(best[0].best_model_score), Path(best[0].best_model_path).name)
    model.requires_grad_(True)
    return model.eval()
