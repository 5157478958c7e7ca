"""One training engine for every objective.

An objective is a :class:`TrainingPlan` (a ``LightningModule``) that owns the network(s) and
implements :meth:`TrainingPlan.step`; everything else is shared here: the AdamW + warm-up/cosine setup
(built in one place), per-step seeded dropout (a resumed run is bitwise identical on the same machine
and thread count), checkpoints every N steps with the run's identity, exact resume, CSV logs, progress
(a bar on a terminal, plain log lines otherwise), the training-curve PNG, DDP/FSDP and bf16 on GPU.
:func:`fit` runs a plan; options of ``lightning.Trainer`` travel as ``trainer_kwargs``.

>>> plan = PretrainPlan(model, optimizer=OptimizerSettings(lr=1e-2), max_steps=400)   # doctest: +SKIP
>>> fit(plan, data, out_dir="run/", settings=TrainerSettings(max_steps=400))        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from .._atomic import write_json
from .plot import plot_training_curve

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm1d)


@dataclass
class OptimizerSettings:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio`` of the peak rate.

    ``warmup_steps`` None = 5 % of the steps (at most 1000)."""

    lr: float | None = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1

    def warmup(self, max_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(1000, max(1, max_steps // 20))


@dataclass
class TrainerSettings:
    """How :func:`fit` runs: steps, checkpoint/validation/log cadence, clipping, progress, determinism.

    ``progress_bar`` None = a bar on a terminal, periodic log lines otherwise. ``deterministic`` asks
    PyTorch for deterministic algorithms (exact repeats across runs, at some speed cost)."""

    max_steps: int = 1000
    ckpt_every_n_steps: int | None = 500
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    progress_bar: bool | None = None
    deterministic: bool = False


def parameter_groups(module: nn.Module, weight_decay: float, *, lr_scale=None) -> list[dict]:
    """AdamW groups of the trainable parameters: decayed weight matrices; undecayed norms, biases and
    every parameter under a module named ``embed*`` (E1, E2, the DNA projection). ``lr_scale(name)``
    (optional) gives a learning-rate multiplier per parameter name (layer-wise rates); groups are
    split by it."""
    groups: dict[tuple[bool, float], list] = {}
    for module_name, sub in module.named_modules():
        in_embedding = any(part.startswith("embed") for part in module_name.split("."))
        for name, p in sub.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            no_decay = in_embedding or isinstance(sub, _NO_DECAY_MODULES) or p.ndim < 2
            scale = 1.0 if lr_scale is None else float(lr_scale(f"{module_name}.{name}".lstrip(".")))
            groups.setdefault((no_decay, scale), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_scale": scale}
            for (nd, scale), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear 0 → 1 over ``warmup_steps``, then cosine 1 → ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingPlan(L.LightningModule):
    """Base of every objective. Subclasses set ``self.model`` (and any head) and implement :meth:`step`.

    Parameters
    ----------
    model
        The network being trained (saved with ``save_pretrained`` by the caller after :func:`fit`).
    optimizer
        :class:`OptimizerSettings`.
    max_steps
        Length of the schedule.
    seed
        Seeds dropout per step: batch ``i`` on rank ``r`` always gets the same dropout masks.
    run_info
        JSON-able identity of the run (config, recipe, data fingerprint), stored in every checkpoint and
        compared on resume.
    """

    def __init__(self, model: nn.Module, *, optimizer: OptimizerSettings, max_steps: int, seed: int = 0,
                 run_info: dict | None = None):
        super().__init__()
        self.model = model
        self.optim, self.max_steps, self.seed = optimizer, int(max_steps), int(seed)
        self.run_info = run_info or {}
        self.batches_seen = 0  # training batches consumed on this rank (restored on resume)
        self.data_stats: dict = {"cells": 0, "tokens": 0, "labels": {}}  # what this rank trained on

    # ------------------------------------------------------------ what a subclass provides
    def step(self, batch, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """(loss, named values to log) for one batch; ``stage`` is "train" or "val"."""
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """AdamW groups (default: :func:`parameter_groups` over every trainable parameter of the plan)."""
        return parameter_groups(self, self.optim.weight_decay)

    # ------------------------------------------------------------ shared loop pieces
    def on_train_batch_start(self, batch, batch_idx):
        key = np.random.SeedSequence([self.seed, self.batches_seen, self.global_rank])
        torch.manual_seed(int(key.generate_state(1, dtype=np.uint64)[0]))
        self.batches_seen += 1

    def training_step(self, batch, batch_idx):
        loss, logs = self.step(batch, "train")
        n = batch.num_cells
        self._count(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, logs = self.step(batch, "val")
        self.log_dict({f"val/{k}": v for k, v in {"loss": loss, **logs}.items()}, batch_size=batch.num_cells,
                      sync_dist=True)

    def _count(self, batch) -> None:
        self.data_stats["cells"] += batch.num_cells
        self.data_stats["tokens"] += batch.num_tokens
        labels, counts = torch.unique(batch.label("cell_type").cpu(), return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=False):
            self.data_stats["labels"][str(label)] = self.data_stats["labels"].get(str(label), 0) + int(count)

    def configure_optimizers(self):
        o = self.optim
        groups = self.param_groups()
        for g in groups:
            g["lr"] = o.lr * g.pop("lr_scale", 1.0)
        # fused: one kernel per parameter (the E1 table has V x k entries: 8x less optimizer time on CPU)
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), fused=True)
        warm = o.warmup(self.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup_steps=warm, max_steps=self.max_steps, min_lr_ratio=o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["atacformer"] = {"batches_seen": self.batches_seen, "data_stats": self.data_stats,
                                    "run": self.run_info}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("atacformer", {})
        self.batches_seen = int(state.get("batches_seen", 0))
        self.data_stats = state.get("data_stats", self.data_stats)


# ---------------------------------------------------------------- checkpoints and run identity
def fingerprint(*parts) -> str:
    """SHA-256 (16 hex digits) of JSON-able parts: the identity of a run's data and settings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint, read without running pickled code (``weights_only=True``); a clear error
    for a truncated or foreign file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise ValueError(f"{path}: not a readable atacformer checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from None


def resume_path(resume: str | Path | None, out_dir: Path) -> Path | None:
    """The checkpoint to resume from: None, ``"last"`` (``out_dir/checkpoints/last.ckpt``) or a path."""
    if resume is None:
        return None
    path = out_dir / CHECKPOINT_DIR / "last.ckpt" if str(resume) == "last" else Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return path


def check_resume(ckpt: dict, path: Path, run_info: dict) -> None:
    """Refuse to resume a checkpoint of a different run (other data, recipe or architecture)."""
    saved = ckpt.get("atacformer", {}).get("run", {})
    for key in ("data", "recipe"):
        if key in saved and key in run_info and saved[key] != run_info[key]:
            raise ValueError(f"{path}: this checkpoint belongs to another run (its {key} fingerprint "
                             f"{saved[key]} differs from this run's {run_info[key]}); resume with the same "
                             "inputs and settings, or start a new run")


def world_size(trainer_kwargs: dict | None) -> int:
    """Processes a Trainer with these options will run (devices × nodes; "auto" counts as 1)."""
    kw = trainer_kwargs or {}
    devices = kw.get("devices", 1)
    n = devices if isinstance(devices, int) else len(devices) if isinstance(devices, (list, tuple)) else 1
    return max(1, n) * max(1, int(kw.get("num_nodes", 1)))


def resume_checked(resume: str | Path | None, out_dir: Path, run_info: dict) -> Path | None:
    """:func:`resume_path`, then :func:`check_resume` of that checkpoint against this run."""
    path = resume_path(resume, out_dir)
    if path is not None:
        check_resume(load_checkpoint(path), path, run_info)
    return path


def prepare_out_dir(out_dir: Path, *, resume: Path | None, overwrite: bool) -> None:
    """Refuse to write a new run into a folder that holds a model or checkpoints, unless ``overwrite``
    (then the old checkpoints and logs are removed first, so no old run can be resumed by mistake)."""
    old = [p for p in (out_dir / "config.json", out_dir / CHECKPOINT_DIR, out_dir / LOG_DIR) if p.exists()]
    if resume is not None or not old:
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir}: already holds a model or a training run ({old[0].name}); "
                              "use overwrite=True (--overwrite) to replace it, or resume='last' (--resume last)")
    for p in (out_dir / CHECKPOINT_DIR, out_dir / LOG_DIR):
        shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- callbacks
class LogProgress(Callback):
    """Plain progress lines (for logs and notebooks without a terminal): every ``every`` steps."""

    def __init__(self, every: int):
        self.every = max(1, every)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if trainer.is_global_zero and (step % self.every == 0 or step == trainer.max_steps):
            loss = trainer.callback_metrics.get("train/loss")
            log.info("step %d/%d%s", step, trainer.max_steps, "" if loss is None else f"  loss {float(loss):.4f}")


class StepProgressBar(TQDMProgressBar):
    """A terminal bar over the optimisation steps (the training stream is endless: one "epoch")."""

    def on_train_epoch_start(self, trainer, *_):
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.total = trainer.max_steps
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.set_description("train steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        bar.n = trainer.global_step
        bar.set_postfix(self.get_metrics(trainer, pl_module))
        bar.refresh()


class RankSummary(Callback):
    """Every rank reports what it trained on and a hash of its weights; rank 0 writes ``ranks.json``."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: TrainingPlan) -> None:
        mine = {"rank": trainer.global_rank, "weights_sha256": weights_digest(pl_module.model),
                "batches": pl_module.batches_seen, **pl_module.data_stats}
        ranks = [mine]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, mine)
        if trainer.is_global_zero:
            write_json(self.path, ranks)
            if len({r["weights_sha256"] for r in ranks}) > 1 and trainer.strategy.strategy_name.startswith("ddp"):
                log.warning("DDP ranks ended with different weights: %s", [r["weights_sha256"][:12] for r in ranks])


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of all parameters and buffers (names and bytes): equal digests = bitwise-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the Trainer
def _accelerator(trainer_kwargs: dict) -> str:
    acc = trainer_kwargs.get("accelerator", "auto")
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError("accelerator='gpu' was asked for but CUDA is not available; use accelerator='cpu'")
    return acc


class _DropAdverts(logging.Filter):
    """Lightning's product tips are not events of the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡")


def _quiet_lightning() -> None:
    """One clean line per event: no product tips, no deprecation notes from Lightning's own internals."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in lg.filters):
            lg.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
    warnings.filterwarnings("ignore", message=r".*does not have many workers", category=Warning)


def make_trainer(out_dir: Path, settings: TrainerSettings, *, has_val: bool, callbacks: Sequence[Callback] = (),
                 trainer_kwargs: dict | None = None) -> L.Trainer:
    """The one ``lightning.Trainer`` builder (CSV logs, checkpoints, progress, precision, rank summary)."""
    _quiet_lightning()
    kw = dict(trainer_kwargs or {})
    accelerator = _accelerator(kw)
    kw["accelerator"] = accelerator
    kw.setdefault("precision", "bf16-mixed" if accelerator in ("gpu", "cuda") else "32-true")
    bar = sys.stderr.isatty() if settings.progress_bar is None else settings.progress_bar
    cbs = [RankSummary(out_dir / LOG_DIR / "ranks.json"), *callbacks]
    if settings.ckpt_every_n_steps:
        cbs.append(ModelCheckpoint(dirpath=out_dir / CHECKPOINT_DIR, filename="step={step}",
                                   auto_insert_metric_name=False, every_n_train_steps=settings.ckpt_every_n_steps,
                                   save_top_k=-1, save_last=True))
    cbs.append(StepProgressBar() if bar else LogProgress(max(settings.log_every_n_steps, settings.max_steps // 20)))
    return L.Trainer(
        max_steps=settings.max_steps, default_root_dir=out_dir, logger=[CSVLogger(out_dir, name=LOG_DIR)],
        callbacks=cbs, gradient_clip_val=settings.gradient_clip_val,
        accumulate_grad_batches=settings.accumulate_grad_batches, log_every_n_steps=settings.log_every_n_steps,
        enable_progress_bar=bar, enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in cbs),
        val_check_interval=settings.val_every_n_steps if has_val else None, check_val_every_n_epoch=None,
        limit_val_batches=None if has_val else 0, num_sanity_val_steps=0, use_distributed_sampler=False,
        deterministic=settings.deterministic or None, **kw)


def fit(plan: TrainingPlan, data: L.LightningDataModule, *, out_dir: str | Path, settings: TrainerSettings,
        resume: str | Path | None = None, callbacks: Sequence[Callback] = (),
        trainer_kwargs: dict | None = None) -> L.Trainer:
    """Train ``plan`` on ``data`` into ``out_dir`` (``checkpoints/``, ``logs/``, ``training_curve.png``).

    Parameters
    ----------
    plan
        A :class:`TrainingPlan`.
    data
        A ``LightningDataModule`` (:class:`~atacformer.train.AtacformerDataModule`); ``data.has_val``
        says whether it has validation cells for every rank.
    out_dir
        Run folder (must exist; see :func:`prepare_out_dir`).
    settings
        :class:`TrainerSettings`.
    resume
        A checkpoint path to continue from (already checked with :func:`check_resume`).
    callbacks
        Extra Lightning callbacks.
    trainer_kwargs
        Passed to ``lightning.Trainer`` (``devices``, ``num_nodes``, ``strategy``, ``accelerator``,
        ``precision``, ...).

    Returns
    -------
    The fitted ``lightning.Trainer``.
    """
    out_dir = Path(out_dir)
    has_val = settings.val_every_n_steps is not None and bool(getattr(data, "has_val", False))
    if settings.val_every_n_steps is not None and not has_val:
        log.warning("no validation: fewer held-out cells or validation row groups than ranks")
    trainer = make_trainer(out_dir, settings, has_val=has_val, callbacks=callbacks, trainer_kwargs=trainer_kwargs)
    trainer.fit(plan, datamodule=data, ckpt_path=None if resume is None else str(resume), weights_only=True)
    if trainer.is_global_zero:
        plot_training_curve(out_dir / LOG_DIR, out_dir / "training_curve.png")
        write_json(out_dir / LOG_DIR / "run.json", {"settings": asdict(settings), **plan.run_info})
    return trainer
