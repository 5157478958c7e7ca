"""Supervised fine-tuning of <cls> heads (a :class:`~atacformer.train.ClassifierPlan` on the engine),
and label prediction."""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from sklearn.model_selection import train_test_split

from ..metrics.labels import knn_votes
from ..models import Atacformer
from ..models.heads import ClassifierHead
from ..train import (
    AtacformerDataModule,
    BatchSettings,
    ClassifierPlan,
    DataSettings,
    FinetuneRecipe,
    TrainerSettings,
    encode_cells,
    fit,
    read_metrics,
)
from ..train.batcher import adata_cells
from ..train.engine import fingerprint, load_checkpoint, resume_checked, world_size
from ..train.tuning import dropout_rate, freeze
from .mnn import unit_rows

log = logging.getLogger(__name__)


def label_codes(values, classes) -> np.ndarray:
    """Codes of ``values`` in ``classes``; -1 for missing/unseen."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(v), -1) if not pd.isna(v) else -1 for v in np.asarray(values, dtype=object)],
                    dtype=np.int64)


def _ensure_head(model: Atacformer, kind: str, names: list[str]) -> None:
    """Reuse the model's head when its classes match ``names``; otherwise attach a fresh one."""
    c = model.config
    head = getattr(model, f"{kind}_head")
    if head is None or list(getattr(c, f"{kind}_names")) != names:
        setattr(model, f"{kind}_head", ClassifierHead(c.d_model, c.head_hidden, len(names), c.dropout).to(model.device))
        setattr(c, f"n_{kind}s", len(names))
        setattr(c, f"{kind}_names", list(names))


def _split(adata: AnnData, codes: np.ndarray, batch_key: str | None, r: FinetuneRecipe):
    """Stratified (label, and ``batch_key``) train/validation indices of the labelled cells."""
    idx = np.flatnonzero(codes >= 0)
    strata = codes[idx].astype(str)
    if batch_key is not None:
        strata = strata + "|" + adata.obs[batch_key].astype(str).to_numpy()[idx]
    counts = pd.Series(strata).value_counts()
    stratify = strata if counts.min() >= 2 and r.val_fraction * len(idx) >= len(counts) else None
    tr, va = train_test_split(idx, test_size=r.val_fraction, random_state=r.seed, stratify=stratify)
    return np.sort(tr), np.sort(va)


def _class_weights(codes: np.ndarray, n_classes: int, mode: str | None) -> torch.Tensor | None:
    """None, or "balanced": n / (n_classes * n_c) per class c over the labelled cells (as scikit-learn)."""
    if mode is None:
        return None
    counts = np.bincount(codes[codes >= 0], minlength=n_classes).astype(np.float64)
    return torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def _labels(adata: AnnData, key: str | None, model: Atacformer, kind: str) -> tuple[list[str], np.ndarray] | None:
    if key is None:
        return None
    if key not in adata.obs:
        raise ValueError(f"adata.obs has no {key!r} column")
    names = sorted(adata.obs[key].dropna().astype(str).unique())
    if len(names) < 2:
        raise ValueError(f"obs[{key!r}] needs at least two classes to fine-tune, got {names}")
    _ensure_head(model, kind, names)
    return names, label_codes(adata.obs[key], names)


def _history(log_dir: Path, steps_per_epoch: int) -> pd.DataFrame:
    """Per-epoch training/validation loss and accuracy from the run's CSV logs."""
    m = read_metrics(log_dir)
    m["epoch"] = m["step"] // steps_per_epoch
    train = m.groupby("epoch")[["train/loss", "train/cell_type_accuracy"]].mean()
    val = m.dropna(subset=["val/loss"]).groupby("epoch")[["val/loss", "val/cell_type_accuracy", "val/macro_f1"]].last()
    out = train.join(val, how="left").reset_index()
    return out.rename(columns={"train/loss": "train_loss", "train/cell_type_accuracy": "train_accuracy",
                               "val/loss": "val_loss", "val/cell_type_accuracy": "val_accuracy",
                               "val/macro_f1": "val_macro_f1"})


def finetune(
    adata: AnnData, model: Atacformer, *, labels_key: str = "cell_type", organ_key: str | None = None,
    batch_key: str | None = None, recipe: FinetuneRecipe | None = None, out_dir: str | Path | None = None,
    resume: str | Path | None = None, key_added: str = "atacformer_finetune", trainer_kwargs: dict | None = None,
) -> Atacformer:
    """Fine-tune a copy of ``model`` to predict ``obs[labels_key]`` (and ``obs[organ_key]``) from <cls>.

    Parameters
    ----------
    adata
        Labelled cells × bins (cells with a missing label are ignored).
    model
        A pretrained :class:`~atacformer.models.Atacformer`; it is not changed.
    labels_key, organ_key
        ``obs`` columns of the cell-type head (and of an organ/tissue head).
    batch_key
        Also stratify the validation split by this ``obs`` column.
    recipe
        :class:`~atacformer.train.FinetuneRecipe` (epochs, rates, augmentation, early stopping).
    out_dir
        Run folder for checkpoints (one per epoch) and logs, for ``resume``; None = a temporary folder.
    resume
        ``"last"`` or a checkpoint of an interrupted fine-tune in ``out_dir``.
    key_added
        Where the history goes in ``uns``.
    trainer_kwargs
        ``lightning.Trainer`` options (``devices``, ``strategy``, ``accelerator``, ...).

    Returns
    -------
    The fine-tuned model (the weights of the best validation epoch). Sets ``adata.uns[key_added]``:
    ``history`` (per epoch: train/val loss and accuracy, val macro-F1), ``classes``, ``best_epoch``,
    ``best_val_loss``, ``n_train``, ``n_val``.
    """
    r = recipe or FinetuneRecipe()
    L.seed_everything(r.seed, verbose=False)  # new heads and everything after depend on the recipe's seed only
    world = world_size(trainer_kwargs)
    if world > 1 and out_dir is None:
        raise ValueError("fine-tuning on several processes needs an out_dir shared by all ranks")
    tuned, heads = _with_heads(adata, model, labels_key, organ_key, r)
    train_idx, val_idx = _split(adata, heads["cell_type"][1], batch_key, r)
    steps = -(-len(train_idx) // (r.batch_size * world))  # per epoch (each rank streams its share)
    data = AtacformerDataModule(adata, data=DataSettings(batch_size=r.batch_size), batch=r.batch,
                                max_length=tuned.config.max_length, codes={k: v[1] for k, v in heads.items()},
                                split=(train_idx, val_idx), val_batch=BatchSettings(mask_fraction=0.0), seed=r.seed)
    plan = ClassifierPlan(tuned, class_weights={k: _class_weights(v[1], len(v[0]), r.class_weight)
                                                for k, v in heads.items()},
                          state_loss_weight=r.state_loss_weight, body_lr_ratio=r.body_lr_ratio,
                          layer_decay=r.layer_decay, optimizer=r.optimizer, max_steps=r.epochs * steps, seed=r.seed,
                          run_info={"task": "finetune", "labels_key": labels_key,
                                    "data": fingerprint(data.fingerprint(), labels_key, organ_key),
                                    "recipe": fingerprint({k: v for k, v in r.to_dict().items() if k != "epochs"})})
    history = _fit_best(plan, data, r, steps=steps, out_dir=out_dir, resume=resume, trainer_kwargs=trainer_kwargs)
    tuned.requires_grad_(True).eval()
    best_row = history.loc[history["val_loss"].idxmin() if r.monitor == "loss" else history["val_macro_f1"].idxmax()]
    adata.uns[key_added] = {"history": history, "classes": heads["cell_type"][0], "monitor": r.monitor,
                            "best_epoch": int(best_row["epoch"]), "best_val_loss": float(best_row["val_loss"]),
                            "n_train": len(train_idx), "n_val": len(val_idx)}
    return tuned


def _with_heads(adata: AnnData, model: Atacformer, labels_key: str, organ_key: str | None, r: FinetuneRecipe):
    """A trainable copy of ``model`` with heads for the label columns (frozen as the recipe says), and
    ``{slot: (class names, codes per cell)}``."""
    tuned = copy.deepcopy(model).train()
    heads = {k: v for k, v in {"cell_type": _labels(adata, labels_key, tuned, "cell_type"),
                               "organ": _labels(adata, organ_key, tuned, "organ")}.items() if v is not None}
    freeze(tuned, trainable_last_layers=r.trainable_layers, train_embeddings=r.train_embeddings)
    if r.state_loss_weight <= 0:
        tuned.decoder.requires_grad_(False)
    return tuned, heads


def _fit_best(plan: ClassifierPlan, data: AtacformerDataModule, r: FinetuneRecipe, *, steps: int, out_dir,
              resume, trainer_kwargs) -> pd.DataFrame:
    """Fit with early stopping on the validation ``monitor``, load the best epoch's weights into ``plan``;
    the per-epoch history."""
    monitor, mode = ("val/loss", "min") if r.monitor == "loss" else ("val/macro_f1", "max")
    with tempfile.TemporaryDirectory() as tmp, dropout_rate(plan.model, r.dropout):
        run = Path(out_dir) if out_dir is not None else Path(tmp)
        run.mkdir(parents=True, exist_ok=True)
        best = ModelCheckpoint(dirpath=run / "best", filename="best", monitor=monitor, mode=mode, save_top_k=1)
        stop = EarlyStopping(monitor=monitor, mode=mode, patience=r.patience, min_delta=1e-4)
        settings = TrainerSettings(max_steps=r.epochs * steps, val_every_n_steps=steps, log_every_n_steps=1,
                                   ckpt_every_n_steps=steps if out_dir is not None else None)
        fit(plan, data, out_dir=run, settings=settings, resume=resume_checked(resume, run, plan.run_info),
            callbacks=[best, stop], trainer_kwargs=trainer_kwargs)
        plan.load_state_dict(load_checkpoint(best.best_model_path)["state_dict"])
        return _history(run / "logs", steps)


def knn_probs(ref_X: np.ndarray, ref_codes: np.ndarray, query_X: np.ndarray, n_classes: int, *,
              n_neighbors: int) -> np.ndarray:
    """Share of each class among the ``n_neighbors`` nearest reference cells (cosine), (n_query, n_classes).
    Reference cells with code -1 (missing or unknown label) are ignored."""
    ok = ref_codes >= 0
    return knn_votes(unit_rows(ref_X[ok]), ref_codes[ok], unit_rows(query_X), n_classes, n_neighbors=n_neighbors)


def annotate(
    adata: AnnData, model: Atacformer, *, threshold: float = 0.5, batch_size: int = 64,
    reference: AnnData | None = None, labels_key: str = "cell_type", n_neighbors: int = 15, knn_weight: float = 0.5,
    key_added: str = "atacformer_label", copy: bool = False,
) -> AnnData | None:
    """Predict cell types with the model's <cls> head.

    Parameters
    ----------
    adata
        Query cells × bins.
    model
        A fine-tuned model (:func:`finetune`).
    threshold
        Confidence below this → label ``"unknown"``.
    batch_size
        Cells per forward pass.
    reference, labels_key, n_neighbors, knn_weight
        With a labelled ``reference`` (the fine-tuning cells), mix the head's probabilities with the
        label shares among the ``n_neighbors`` nearest reference cells in the fine-tuned <cls> space:
        ``(1 - knn_weight) * head + knn_weight * kNN``. The reference is not changed.
    key_added
        Output key.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets ``obs[key_added]`` (label or "unknown"), ``obs[key_added + "_confidence"]``,
    ``obsm[key_added + "_probs"]`` and ``uns[key_added]`` (``classes``, ``threshold``, ...).
    """
    if model.cell_type_head is None:
        raise ValueError("the model has no cell-type head: fine-tune it first (tl.finetune)")
    if not 0.0 <= knn_weight <= 1.0:
        raise ValueError(f"knn_weight must be in [0, 1], got {knn_weight}")
    adata = adata.copy() if copy else adata
    names = list(model.config.cell_type_names) or [str(i) for i in range(model.config.n_cell_types)]
    emb, probs = encode_cells(model, adata_cells(adata, model), batch_size=batch_size)
    if reference is not None and knn_weight > 0:
        if labels_key not in reference.obs:
            raise ValueError(f"reference.obs has no {labels_key!r} column")
        ref_emb, _ = encode_cells(model, adata_cells(reference, model), batch_size=batch_size)
        codes = label_codes(reference.obs[labels_key], names)  # -1: missing or not a head class
        knn = knn_probs(ref_emb, codes, emb, len(names), n_neighbors=n_neighbors)
        probs = (1 - knn_weight) * probs + knn_weight * knn
    probs = probs.astype(np.float32)
    conf = probs.max(1)
    label = np.array(names, dtype=object)[probs.argmax(1)]
    label[conf < threshold] = "unknown"
    adata.obs[key_added] = pd.Categorical(label)
    adata.obs[f"{key_added}_confidence"] = conf
    adata.obsm[f"{key_added}_probs"] = probs
    adata.uns[key_added] = {"classes": names, "threshold": float(threshold), "n_neighbors": int(n_neighbors),
                            "knn_weight": float(knn_weight if reference is not None else 0.0)}
    return adata if copy else None
