"""Supervised fine-tuning of the <cls> cell-type (and organ) heads, and label prediction."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from sklearn.model_selection import train_test_split

from ..models import Atacformer
from ..models.heads import ClassifierHead
from ._torch import (
    batches,
    cell_dicts,
    cls_states,
    freeze,
    label_codes,
    state_dict_copy,
)

log = logging.getLogger(__name__)


def _ensure_head(model: Atacformer, kind: str, names: list[str]) -> ClassifierHead:
    """Reuse the model's head when its classes match ``names``; otherwise attach a fresh one."""
    c = model.config
    head = getattr(model, f"{kind}_head")
    if head is None or list(getattr(c, f"{kind}_names")) != names:
        head = ClassifierHead(c.d_model, c.head_hidden, len(names), c.dropout).to(model.device)
        setattr(model, f"{kind}_head", head)
        setattr(c, f"n_{kind}s", len(names))
        setattr(c, f"{kind}_names", list(names))
    return head


def _split(n: int, strata: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    counts = pd.Series(strata).value_counts()
    stratify = strata if counts.min() >= 2 and val_fraction * n >= len(counts) else None
    return train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)


def finetune(
    adata: AnnData,
    model: Atacformer,
    *,
    labels_key: str = "cell_type",
    organ_key: str | None = None,
    batch_key: str | None = None,
    trainable_layers: int | None = None,
    train_embeddings: bool = False,
    epochs: int = 40,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 32,
    val_fraction: float = 0.15,
    patience: int = 6,
    mask_fraction: float = 0.1,
    seed: int = 0,
    key_added: str = "atacformer_finetune",
) -> AnnData:
    """Fine-tune ``model`` in place to predict ``obs[labels_key]`` (and ``obs[organ_key]``) from <cls>.

    ``trainable_layers``: train only the last n encoder layers plus the heads (None = all layers); the
    genome-wide bin-ID embedding table is trained only with ``train_embeddings``.
    A stratified validation split (by label, and by ``batch_key`` if given) drives early stopping
    (``patience`` epochs without a lower validation loss); the best weights are restored. Cells with a
    missing label are ignored. ``mask_fraction`` randomly drops that share of each training cell's open
    bins as augmentation. The per-epoch history goes to ``uns[key_added]``."""
    if labels_key not in adata.obs:
        raise ValueError(f"adata.obs has no {labels_key!r} column")
    keep = adata.obs[labels_key].notna().to_numpy()
    labels = adata.obs[labels_key].astype(str).to_numpy()
    names = sorted(set(labels[keep]))
    if len(names) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least two classes to fine-tune, got {names}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cells = cell_dicts(adata, model)
    heads = {"cell_type": (_ensure_head(model, "cell_type", names), label_codes(np.where(keep, labels, None), names))}
    if organ_key is not None:
        organs = adata.obs[organ_key].astype(str).to_numpy()
        onames = sorted(set(organs))
        heads["organ"] = (_ensure_head(model, "organ", onames), label_codes(organs, onames))
    strata = labels if batch_key is None else labels + "|" + adata.obs[batch_key].astype(str).to_numpy()
    train_idx, val_idx = _split(int(keep.sum()), strata[keep], val_fraction, seed)
    train_idx, val_idx = np.flatnonzero(keep)[train_idx], np.flatnonzero(keep)[val_idx]

    freeze(model, trainable_last_layers=trainable_layers, train_embeddings=train_embeddings)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def run(indices, train: bool) -> tuple[float, float]:
        model.train(train)
        total, correct, n = 0.0, 0, 0
        for idx, batch in batches(cells, model, batch_size=batch_size, mask_fraction=mask_fraction if train else 0.0,
                                  rng=rng, shuffle=train, indices=indices):
            with torch.set_grad_enabled(train):
                cls = cls_states(model, batch)  # (B, d)
                loss = 0.0
                for kind, (head, codes) in heads.items():
                    y = torch.from_numpy(codes[idx]).to(cls.device)
                    logits = head(cls)  # (B, n_classes)
                    loss = loss + F.cross_entropy(logits, y, ignore_index=-1)
                    if kind == "cell_type":
                        correct += int((logits.argmax(1) == y).sum())
            if train:
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        return total / max(n, 1), correct / max(n, 1)

    history, best, best_loss, bad = [], None, np.inf, 0
    for epoch in range(epochs):
        train_loss, train_acc = run(train_idx, True)
        val_loss, val_acc = run(val_idx, False)
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                        "val_loss": val_loss, "val_accuracy": val_acc})
        log.info("finetune epoch %d: train loss %.4f, val loss %.4f, val acc %.3f", epoch, train_loss, val_loss, val_acc)
        if val_loss < best_loss - 1e-4:
            best, best_loss, bad = state_dict_copy(model), val_loss, 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    adata.uns[key_added] = {"history": pd.DataFrame(history), "classes": names, "best_val_loss": float(best_loss),
                            "n_train": len(train_idx), "n_val": len(val_idx)}
    return adata


@torch.no_grad()
def annotate(
    query: AnnData, model: Atacformer, *, threshold: float = 0.5, batch_size: int = 64,
    key_added: str = "atacformer_label",
) -> AnnData:
    """Predict cell types with the model's <cls> head: ``obs[key_added]`` (label, "unknown" when the
    softmax confidence is below ``threshold``), ``obs[key_added + "_confidence"]`` and the class
    probabilities in ``obsm[key_added + "_probs"]`` (columns in ``uns[key_added]["classes"]``)."""
    if model.cell_type_head is None:
        raise ValueError("the model has no cell-type head: fine-tune it first (tl.finetune)")
    names = list(model.config.cell_type_names) or [str(i) for i in range(model.config.n_cell_types)]
    cells = cell_dicts(query, model)
    model.eval()
    probs = np.zeros((len(cells), len(names)), dtype=np.float32)
    for idx, batch in batches(cells, model, batch_size=batch_size):
        probs[idx] = torch.softmax(model.cell_type_head(cls_states(model, batch)).float(), 1).cpu().numpy()
    conf = probs.max(1)
    label = np.array(names, dtype=object)[probs.argmax(1)]
    label[conf < threshold] = "unknown"
    query.obs[key_added] = pd.Categorical(label)
    query.obs[f"{key_added}_confidence"] = conf
    query.obsm[f"{key_added}_probs"] = probs
    query.uns[key_added] = {"classes": names, "threshold": float(threshold)}
    return query
