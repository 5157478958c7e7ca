"""Supervised fine-tuning of <cls> heads (a :class:`~atacformer.train.ClassifierPlan` on the engine),
and label prediction."""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Sequence
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
from ..train.batcher import adata_cells, check_adata
from ..train.engine import fingerprint, load_checkpoint, resume_checked, world_size
from ..train.tuning import dropout_rate, freeze
from .embed import is_region_sets, n_subsets_for
from .mnn import unit_rows

log = logging.getLogger(__name__)


def label_codes(values, classes) -> np.ndarray:
    """Codes of ``values`` in ``classes``; -1 for missing/unseen."""
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(str(v), -1) if not pd.isna(v) else -1 for v in np.asarray(values, dtype=object)],
                    dtype=np.int64)


def label_columns(labels_key: str | Sequence[str]) -> list[str]:
    """``"cell_type"``, ``"cell_type,assay"`` or ``["cell_type", "assay"]`` → the list of label columns."""
    cols = [c.strip() for c in labels_key.split(",")] if isinstance(labels_key, str) else [str(c) for c in labels_key]
    if not cols or any(not c for c in cols) or len(set(cols)) != len(cols):
        raise ValueError(f"labels_key needs distinct, non-empty column names, got {labels_key!r}")
    return cols


def _split(adata: AnnData, codes: np.ndarray, batch_key: str | None, r: FinetuneRecipe):
    """Stratified train/validation indices of the labelled rows. ``codes`` (n, n_columns): a row takes part
    when it has a label in any column; strata = its first-column label (and ``batch_key``)."""
    idx = np.flatnonzero((codes >= 0).any(1))
    strata = codes[idx, 0].astype(str)
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


def _labels(adata: AnnData, column: str, model: Atacformer) -> tuple[list[str], np.ndarray]:
    """Class names and codes of ``obs[column]``; attaches (or keeps) the model's head for it."""
    if column not in adata.obs:
        raise ValueError(f"adata.obs has no {column!r} column (have: {list(adata.obs.columns)})")
    names = sorted(adata.obs[column].dropna().astype(str).unique())
    if len(names) < 2:
        raise ValueError(f"obs[{column!r}] needs at least two classes to fine-tune, got {names}")
    model.set_head(column, names)
    return names, label_codes(adata.obs[column], names)


def _history(log_dir: Path, steps_per_epoch: int, columns: list[str]) -> pd.DataFrame:
    """Per-epoch training/validation loss, accuracy (mean over the label columns, and per column) and
    validation macro-F1 from the run's CSV logs."""
    m = read_metrics(log_dir)
    m["epoch"] = m["step"] // steps_per_epoch
    for stage in ("train", "val"):
        acc = [f"{stage}/{c}_accuracy" for c in columns if f"{stage}/{c}_accuracy" in m]
        m[f"{stage}/accuracy"] = m[acc].mean(1) if acc else np.nan
    per_col = [c for col in columns for c in (f"val/{col}_accuracy", f"val/macro_f1_{col}") if c in m]
    train = m.groupby("epoch")[["train/loss", "train/accuracy"]].mean()
    val = m.dropna(subset=["val/loss"]).groupby("epoch")[["val/loss", "val/accuracy", "val/macro_f1", *per_col]].last()
    out = train.join(val, how="left").reset_index()
    names = {"train/loss": "train_loss", "train/accuracy": "train_accuracy", "val/loss": "val_loss",
             "val/accuracy": "val_accuracy", "val/macro_f1": "val_macro_f1"}
    names.update({f"val/{col}_accuracy": f"val_accuracy_{col}" for col in columns})
    names.update({f"val/macro_f1_{col}": f"val_macro_f1_{col}" for col in columns})
    return out.rename(columns=names)


def default_recipe(adata: AnnData) -> FinetuneRecipe:
    """The fine-tuning defaults for ``adata``: :meth:`FinetuneRecipe.region_sets` for rows read from BED files
    (:func:`~atacformer.tl.embed.is_region_sets`), else ``FinetuneRecipe()``."""
    return FinetuneRecipe.region_sets() if is_region_sets(adata) else FinetuneRecipe()


def finetune(
    adata: AnnData, model: Atacformer, *, labels_key: str | Sequence[str] = "cell_type",
    batch_key: str | None = None, recipe: FinetuneRecipe | None = None, out_dir: str | Path | None = None,
    resume: str | Path | None = None, key_added: str = "atacformer_finetune", trainer_kwargs: dict | None = None,
) -> Atacformer:
    """Fine-tune a copy of ``model`` to predict one or more label columns of ``obs`` from <cls>.

    Parameters
    ----------
    adata
        Labelled cells × bins, or region sets × bins (one row per BED file, ``atacformer ingest *.bed``).
        A row missing a label is ignored by that column's head (and left out when it has none at all).
    model
        A pretrained :class:`~atacformer.models.Atacformer`; it is not changed.
    labels_key
        The ``obs`` column(s) to predict, one head each: ``"cell_type"``, ``["cell_type", "assay"]`` or
        ``"cell_type,assay"``. A head of the model whose classes match is trained further, the others
        start fresh; the fine-tuned model has exactly these heads.
    batch_key
        Also stratify the validation split by this ``obs`` column.
    recipe
        :class:`~atacformer.train.FinetuneRecipe` (epochs, rates, augmentation, ...); None = :func:`default_recipe`.
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
    The fine-tuned model (the weights of the best validation epoch; ``config.heads`` = column → classes).
    Sets ``adata.uns[key_added]``: ``history`` (per epoch: train/val loss and accuracy, val macro-F1,
    the mean over the columns and per column), ``labels_key`` (the columns), ``heads`` (column →
    classes), ``classes`` (of the first column), ``best_epoch``, ``best_val_loss``, ``n_train``, ``n_val``.
    """
    r = recipe or default_recipe(adata)
    columns = label_columns(labels_key)
    check_adata(adata, model)
    L.seed_everything(r.seed, verbose=False)  # new heads and everything after depend on the recipe's seed only
    world = world_size(trainer_kwargs)
    if world > 1 and out_dir is None:
        raise ValueError("fine-tuning on several processes needs an out_dir shared by all ranks")
    tuned, heads = _with_heads(adata, model, columns, r)
    train_idx, val_idx = _split(adata, np.stack([heads[c][1] for c in columns], 1), batch_key, r)
    steps = -(-len(train_idx) // (r.batch_size * world))  # per epoch (each rank streams its share)
    data = AtacformerDataModule(adata, data=DataSettings(batch_size=r.batch_size), batch=r.batch,
                                max_length=tuned.config.max_length, codes={k: v[1] for k, v in heads.items()},
                                split=(train_idx, val_idx), val_batch=BatchSettings(mask_fraction=0.0), seed=r.seed)
    plan = _classifier_plan(tuned, heads, data, r, columns=columns, max_steps=r.epochs * steps)
    history = _fit_best(plan, data, r, steps=steps, out_dir=out_dir, resume=resume, trainer_kwargs=trainer_kwargs,
                        columns=columns)
    tuned.requires_grad_(True).eval()
    best_row = history.loc[history["val_loss"].idxmin() if r.monitor == "loss" else history["val_macro_f1"].idxmax()]
    adata.uns[key_added] = {"history": history, "labels_key": columns, "heads": {c: heads[c][0] for c in columns},
                            "classes": heads[columns[0]][0], "monitor": r.monitor,
                            "best_epoch": int(best_row["epoch"]), "best_val_loss": float(best_row["val_loss"]),
                            "n_train": len(train_idx), "n_val": len(val_idx)}
    return tuned


def _classifier_plan(tuned: Atacformer, heads: dict, data, r: FinetuneRecipe, *, columns: list[str],
                     max_steps: int) -> ClassifierPlan:
    """The fine-tuning objective: class-weighted heads (one per column), the recipe's rates, the run identity."""
    return ClassifierPlan(tuned, class_weights={k: _class_weights(v[1], len(v[0]), r.class_weight)
                                                for k, v in heads.items()},
                          state_loss_weight=r.state_loss_weight, body_lr_ratio=r.body_lr_ratio,
                          layer_decay=r.layer_decay, optimizer=r.optimizer, max_steps=max_steps, seed=r.seed,
                          run_info={"task": "finetune", "labels_key": columns,
                                    "data": fingerprint(data.fingerprint(), columns),
                                    "recipe": fingerprint({k: v for k, v in r.to_dict().items() if k != "epochs"})})


def _with_heads(adata: AnnData, model: Atacformer, columns: list[str], r: FinetuneRecipe):
    """A trainable copy of ``model`` with exactly one head per label column (a head whose classes match is
    kept, the others start fresh; frozen as the recipe says), and ``{column: (class names, codes per row)}``."""
    tuned = copy.deepcopy(model).train()
    heads = {col: _labels(adata, col, tuned) for col in columns}
    for col in [c for c in tuned.config.heads if c not in heads]:  # the tuned model predicts exactly these
        del tuned.heads[col]
    tuned.config.heads = {col: tuned.config.heads[col] for col in columns}
    tuned.config.head_loss_weights = {c: w for c, w in tuned.config.head_loss_weights.items() if c in heads}
    freeze(tuned, trainable_last_layers=r.trainable_layers, train_embeddings=r.train_embeddings)
    if r.state_loss_weight <= 0:
        tuned.decoder.requires_grad_(False)
    return tuned, heads


def _fit_best(plan: ClassifierPlan, data: AtacformerDataModule, r: FinetuneRecipe, *, steps: int, out_dir,
              resume, trainer_kwargs, columns: list[str]) -> pd.DataFrame:
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
        return _history(run / "logs", steps, columns)


def knn_probs(ref_X: np.ndarray, ref_codes: np.ndarray, query_X: np.ndarray, n_classes: int, *,
              n_neighbors: int) -> np.ndarray:
    """Share of each class among the ``n_neighbors`` nearest reference cells (cosine), (n_query, n_classes).
    Reference cells with code -1 (missing or unknown label) are ignored."""
    ok = ref_codes >= 0
    return knn_votes(unit_rows(ref_X[ok]), ref_codes[ok], unit_rows(query_X), n_classes, n_neighbors=n_neighbors)


def _head_probs(adata: AnnData, model: Atacformer, columns: list[str], reference: AnnData | None, *,
                n_neighbors: int, knn_weight: float, batch_size: int, n_subsets: int) -> dict[str, np.ndarray]:
    """Per column, the head's probabilities, mixed with the kNN label shares among the reference rows."""
    emb, probs = encode_cells(model, adata_cells(adata, model), batch_size=batch_size, n_subsets=n_subsets)
    if reference is None or knn_weight == 0:
        return {col: probs[col] for col in columns}
    for col in columns:
        if col not in reference.obs:
            raise ValueError(f"reference.obs has no {col!r} column (the head's label column)")
    ref_emb, _ = encode_cells(model, adata_cells(reference, model), batch_size=batch_size,
                              n_subsets=n_subsets_for(reference, n_subsets))
    out = {}
    for col in columns:
        names = model.config.heads[col]
        codes = label_codes(reference.obs[col], names)  # -1: missing or not a head class
        knn = knn_probs(ref_emb, codes, emb, len(names), n_neighbors=n_neighbors)
        out[col] = (1 - knn_weight) * probs[col] + knn_weight * knn
    return out


def annotate(
    adata: AnnData, model: Atacformer, *, labels_key: str | Sequence[str] | None = None, threshold: float = 0.5,
    batch_size: int = 64, n_subsets: int | None = None, reference: AnnData | None = None, n_neighbors: int = 15,
    knn_weight: float = 0.5, key_added: str = "atacformer_label", copy: bool = False,
) -> AnnData | None:
    """Predict labels (cell type, tissue, assay, ...) with the model's <cls> heads.

    Parameters
    ----------
    adata
        Query cells × bins, or region sets × bins (one row per BED file).
    model
        A fine-tuned model (:func:`finetune`).
    labels_key
        Which heads (label columns) to predict; None = all of the model's.
    threshold
        Confidence below this → label ``"unknown"``.
    batch_size
        Rows per forward pass.
    n_subsets
        Rows with more open bins than fit in one sentence (region sets) are predicted from the mean of
        this many random subsets of their bins (seeded by their content). None = :func:`n_subsets_for`
        (:data:`REGION_SET_SUBSETS` for region sets from BED files, else 1).
    reference, n_neighbors, knn_weight
        With a labelled ``reference`` (the fine-tuning rows), mix each head's probabilities with the
        label shares (``reference.obs[column]``) among the ``n_neighbors`` nearest reference rows in the
        fine-tuned <cls> space: ``(1 - knn_weight) * head + knn_weight * kNN``. The reference is not changed.
    key_added
        Output key. With one label column: ``obs[key_added]``; with several, ``obs[f"{key_added}_{column}"]``
        per column (``uns[key_added]["columns"]`` lists them).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets, per label column under its key (see ``key_added``), ``obs[key]`` (label or
    "unknown"), ``obs[key + "_confidence"]``, ``obsm[key + "_probs"]``; and ``uns[key_added]`` (``columns``:
    column → key and classes; ``classes`` with one column; ``threshold``, ``n_subsets``, ...).
    """
    columns = _head_columns(model, labels_key)
    if not 0.0 <= knn_weight <= 1.0:
        raise ValueError(f"knn_weight must be in [0, 1], got {knn_weight}")
    adata = adata.copy() if copy else adata
    n_subsets = n_subsets_for(adata, n_subsets)
    probs = _head_probs(adata, model, columns, reference, n_neighbors=n_neighbors, knn_weight=knn_weight,
                        batch_size=batch_size, n_subsets=n_subsets)
    keys = {col: key_added if len(columns) == 1 else f"{key_added}_{col}" for col in columns}
    for col, key in keys.items():
        _write_predictions(adata, probs[col].astype(np.float32), model.config.heads[col], key, threshold)
    info = {"columns": {col: {"key": keys[col], "classes": model.config.heads[col]} for col in columns},
            "threshold": float(threshold), "n_neighbors": int(n_neighbors), "n_subsets": int(n_subsets),
            "knn_weight": float(knn_weight if reference is not None else 0.0)}
    if len(columns) == 1:
        info["classes"] = model.config.heads[columns[0]]
    adata.uns[key_added] = info
    return adata if copy else None


def _head_columns(model: Atacformer, labels_key) -> list[str]:
    """The label columns to predict (all of the model's heads when ``labels_key`` is None), checked."""
    if not len(model.heads):
        raise ValueError("the model has no label head (no cell-type head): fine-tune it first (tl.finetune)")
    columns = list(model.config.heads) if labels_key is None else label_columns(labels_key)
    unknown = [c for c in columns if c not in model.heads]
    if unknown:
        raise ValueError(f"the model has no {unknown[0]!r} head (its heads: {list(model.config.heads)})")
    return columns


def _write_predictions(adata: AnnData, p: np.ndarray, classes: list, key: str, threshold: float) -> None:
    """``obs[key]`` (best class, "unknown" below ``threshold``), ``obs[key_confidence]``, ``obsm[key_probs]``."""
    conf = p.max(1)
    label = np.array(classes, dtype=object)[p.argmax(1)]
    label[conf < threshold] = "unknown"
    adata.obs[key] = pd.Categorical(label)
    adata.obs[f"{key}_confidence"] = conf
    adata.obsm[f"{key}_probs"] = p
