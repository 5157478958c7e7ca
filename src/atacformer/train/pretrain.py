"""``pretrain``: one call from cells (corpus folders or an AnnData) to a saved model directory.

Output folder::

    out_dir/
      config.json, model.safetensors, vocab.json   the model (Atacformer.save_pretrained, rank 0)
      checkpoints/step=N.ckpt, last.ckpt            full training state every ``ckpt_every_n_steps``
      logs/version_*/metrics.csv                    every loss part, lr and validation metrics
      logs/ranks.json                               per rank: cells/tokens/labels trained on, weight hash
      training_curve.png                            the losses over steps
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import anndata as ad
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from .._atomic import write_json
from ..models import Atacformer, AtacformerConfig
from .data import AtacformerDataModule
from .module import AtacformerModule
from .plot import plot_training_curve
from .priors import balanced_state_weights, svd_bin_embeddings

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"

# The pretraining method measured in benchmarks/RESULTS.md (issue 5), applied by default to in-memory cells
# (an AnnData or one .h5ad); any key can be overridden (e.g. contrastive_weight=0 for the masked-bin loss
# only). Corpus folders keep the config's defaults: neighbours and the SVD need the whole matrix in memory.
IN_MEMORY_RECIPE = MappingProxyType({
    "decoder_bins": "observed", "e1_init": "svd", "contrastive_weight": 5.0, "contrastive_drop": 0.8,
    "contrastive_neighbor_add": 1.0, "contrastive_neighbors": "spectral"})
DEFAULT_LR = MappingProxyType({"tiny": 1e-2})  # the tiny preset's measured rate; other presets: 3e-4


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters (names and bytes): equal digests = bitwise-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankSummary(Callback):
    """At the end of training every rank reports what it trained on and a hash of its weights;
    rank 0 writes them to ``logs/ranks.json`` (DDP ranks must agree on the weights)."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: AtacformerModule) -> None:
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


def _resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError("accelerator='gpu' was asked for but CUDA is not available; use --accelerator cpu")
    return accelerator


def _resume_path(resume: str | Path | None, out_dir: Path) -> Path | None:
    if resume is None:
        return None
    path = out_dir / CHECKPOINT_DIR / "last.ckpt" if str(resume) == "last" else Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    return path


def build_config(data: AtacformerDataModule, preset: str, overrides: dict | None) -> AtacformerConfig:
    """The model config for this data: preset sizes, the data's vocabulary and label heads, overrides.

    In-memory cells get :data:`IN_MEMORY_RECIPE` under ``overrides`` (dropout 0 when contrastive).
    Data-derived fields: ``n_decoder_bins`` (``decoder_bins="observed"``: bins open in ≥ 1 training cell)
    and ``state_class_weights="auto"`` (the default here) → :func:`balanced_state_weights` of the
    training cells over the decoder's bins."""
    overrides = dict(overrides or {})
    if data.adata is not None:
        overrides = {**IN_MEMORY_RECIPE, **overrides}
        if "dropout" not in overrides and overrides["contrastive_weight"] > 0:
            overrides["dropout"] = 0.0  # the contrastive views are the augmentation
    weights = overrides.pop("state_class_weights", "auto")
    labels = {}
    if "cell_type" in data.label_names:
        labels.update(n_cell_types=len(data.label_names["cell_type"]), cell_type_names=data.label_names["cell_type"])
    if "organ" in data.label_names:
        labels.update(n_organs=len(data.label_names["organ"]), organ_names=data.label_names["organ"])
    config = AtacformerConfig.from_preset(preset, data.vocab, **{**labels, **overrides})
    if config.decoder_bins == "observed" or weights == "auto":
        counts, n_cells = data.bin_open_counts()
        n_dec = int((counts > 0).sum()) if config.decoder_bins == "observed" else config.n_bins
        if weights == "auto":
            weights = balanced_state_weights(counts, n_cells, n_dec)
            log.info("state weights (balanced over %d cells × %d bins): %s", n_cells, n_dec, weights)
        config = dataclasses.replace(config, state_class_weights=weights,
                                     n_decoder_bins=n_dec if config.decoder_bins == "observed" else 0)
    return dataclasses.replace(config, state_class_weights=weights)


def init_from_data(model: Atacformer, data: AtacformerDataModule) -> None:
    """Set the data-derived parts of a new model: the decoder's observed bins and (``e1_init="svd"``) the
    E1 rows of the observed bins from :func:`svd_bin_embeddings` of the training cells."""
    c = model.config
    if c.decoder_bins == "observed":
        counts, _ = data.bin_open_counts()
        model.decoder.set_bins(torch.from_numpy(np.flatnonzero(counts > 0)))
    if c.e1_init == "svd":
        X = data.train_matrix()
        if X is None:
            raise ValueError("e1_init='svd' needs in-memory cells (an AnnData or one .h5ad), not corpus folders")
        bins, vectors = svd_bin_embeddings(X, c.k, seed=data.seed)
        with torch.no_grad():
            model.encoder.embed.e1.weight[model.bin_offset + torch.from_numpy(bins)] = torch.from_numpy(vectors)


def pretrain(
    inputs: str | Path | ad.AnnData | Sequence[str | Path],
    *,
    out_dir: str | Path,
    preset: str = "tiny",
    overrides: dict | None = None,
    max_steps: int = 1000,
    lr: float | None = None,
    warmup_steps: int | None = None,
    weight_decay: float = 0.05,
    max_tokens_per_batch: int | None = 16384,
    batch_size: int | None = None,
    batch_key: str | None = None,
    accumulate_grad_batches: int = 1,
    gradient_clip_val: float | None = 1.0,
    val_inputs: Sequence[str | Path] | None = None,
    val_fraction: float = 0.05,
    val_every_n_steps: int | None = None,
    ckpt_every_n_steps: int = 500,
    resume: str | Path | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
    num_workers: int = 0,
    dna_embeddings: torch.Tensor | None = None,
    log_every_n_steps: int = 10,
    progress_bar: bool = True,
    seed: int = 0,
) -> Atacformer:
    """Pretrain an Atacformer and save it to ``out_dir`` (see the module docstring for the layout).

    ``resume="last"`` (or a checkpoint path) continues a run exactly where it stopped: same batches,
    masks, dropout and optimizer state, so the losses after the checkpoint equal those of an
    uninterrupted run. On GPU the step runs under bf16 autocast (``precision="bf16-mixed"``).
    ``lr`` defaults to :data:`DEFAULT_LR` of the preset (3e-4 where none is listed). In-memory cells
    are pretrained with the measured recipe (:data:`IN_MEMORY_RECIPE`; ``overrides`` win).
    Scale out with ``devices``/``num_nodes``/``strategy="ddp"|"fsdp"``; every rank reads its own shards.
    ``batch_key`` (AnnData input): an ``obs`` column of samples/datasets; each training batch then holds
    one of them, so the contrastive loss separates cells within a dataset rather than datasets.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = _resolve_accelerator(accelerator)
    ckpt_path = _resume_path(resume, out_dir)
    L.seed_everything(seed, workers=True, verbose=False)

    data = AtacformerDataModule(
        inputs, val_inputs=val_inputs, val_fraction=val_fraction, max_tokens_per_batch=max_tokens_per_batch,
        batch_size=batch_size, num_workers=num_workers, batch_key=batch_key, seed=seed)
    if ckpt_path is not None:  # the checkpoint's architecture wins over preset/overrides
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)["hyper_parameters"]["config"]
        config = AtacformerConfig.from_dict(saved)
        data.vocab.check_data({"genome": config.genome, "bin_size": config.bin_size}, what=f"checkpoint {ckpt_path}")
    else:
        config = build_config(data, preset, overrides)
    data.mask_fraction, data.max_length = config.mask_fraction, config.max_length
    if config.contrastive_weight > 0:  # batches also carry a second view of every cell
        data.contrastive_drop, data.contrastive_neighbor_add = config.contrastive_drop, config.contrastive_neighbor_add
        data.neighbor_method, data.n_neighbors = config.contrastive_neighbors, config.contrastive_n_neighbors
    module = AtacformerModule(
        config, dna_embeddings=dna_embeddings, lr=lr if lr is not None else DEFAULT_LR.get(preset, 3e-4),
        weight_decay=weight_decay, max_steps=max_steps, seed=seed,
        warmup_steps=warmup_steps if warmup_steps is not None else min(1000, max(1, max_steps // 20)))
    if ckpt_path is None:  # a resumed run gets these from its checkpoint
        init_from_data(module.model, data)

    loggers = [CSVLogger(out_dir, name=LOG_DIR)]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out_dir, name=LOG_DIR, version=loggers[0].version))
    except ImportError:
        pass
    checkpoints = ModelCheckpoint(dirpath=out_dir / CHECKPOINT_DIR, filename="step={step}", auto_insert_metric_name=False,
                                  every_n_train_steps=ckpt_every_n_steps, save_top_k=-1, save_last=True)
    world = (int(devices) if str(devices).isdigit() else 1) * num_nodes  # for the validation check only
    data.world_size = world
    has_val = val_every_n_steps is not None and data.has_val
    if val_every_n_steps is not None and not has_val:
        log.warning("no validation: fewer held-out cells or validation row groups than ranks (%d)", world)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision="bf16-mixed" if accelerator in ("gpu", "cuda") else "32-true",
        default_root_dir=out_dir, logger=loggers, callbacks=[checkpoints, RankSummary(out_dir / LOG_DIR / "ranks.json")],
        gradient_clip_val=gradient_clip_val, accumulate_grad_batches=accumulate_grad_batches,
        log_every_n_steps=log_every_n_steps, enable_progress_bar=progress_bar, enable_model_summary=False,
        val_check_interval=val_every_n_steps if has_val else None, check_val_every_n_epoch=None,
        limit_val_batches=None if has_val else 0, num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)

    state = trainer.strategy.lightning_module_state_dict()  # full weights (gathered under FSDP)
    model = Atacformer(config, dna_embeddings=dna_embeddings)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    if trainer.is_global_zero:
        model.save_pretrained(out_dir)
        plot_training_curve(out_dir / LOG_DIR, out_dir / "training_curve.png")
        log.info("saved the model to %s", out_dir)
    return model
