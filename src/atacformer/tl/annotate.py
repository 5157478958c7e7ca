"""Supervised fine-tuning of the <cls> cell-type (and organ) heads, and label prediction."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from sklearn.model_selection import train_test_split

from ..metrics import macro_f1
from ..metrics.labels import knn_votes
from ..models import Atacformer
from ..models.heads import ClassifierHead
from ._torch import (
    batches,
    cell_dicts,
    cls_outputs,
    cls_states,
    dropout_rate,
    freeze,
    label_codes,
    state_dict_copy,
)
from .mnn import unit_rows

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


def _param_groups(model: Atacformer, heads: list[torch.nn.Module], *, lr: float, body_lr: float, layer_decay: float,
                  embedding_lr: float | None, decoder: bool) -> list[dict]:
    """AdamW groups: heads at ``lr``; encoder layers at ``body_lr * layer_decay**depth`` (depth 0 = top
    layer and final norm); the token embeddings at ``embedding_lr`` (None: depth n_layers), without
    weight decay (most bin rows get no gradient from a given dataset and should not shrink); the state
    decoder (if trained) at ``body_lr``. Frozen parameters are left out."""
    enc = model.encoder
    n = len(enc.layers)
    modules = [(enc.ln_f, 0), *((layer, n - 1 - i) for i, layer in enumerate(enc.layers))]
    groups = [{"params": [p for h in heads for p in h.parameters()], "lr": lr}]
    groups += [{"params": ps, "lr": body_lr * layer_decay**depth} for m, depth in modules
               if (ps := [p for p in m.parameters() if p.requires_grad])]
    if ps := [p for p in enc.embed.parameters() if p.requires_grad]:
        e_lr = body_lr * layer_decay**n if embedding_lr is None else embedding_lr
        groups.append({"params": ps, "lr": e_lr, "weight_decay": 0.0})
    if decoder:
        groups.append({"params": list(model.decoder.parameters()), "lr": body_lr})
    return groups


def _class_weights(codes: np.ndarray, n_classes: int, mode: str | None) -> torch.Tensor | None:
    """None, or "balanced": n / (n_classes * n_c) per class c over the labelled cells (as scikit-learn)."""
    if mode is None:
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be None or 'balanced', got {mode!r}")
    counts = np.bincount(codes[codes >= 0], minlength=n_classes).astype(np.float64)
    return torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


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
    body_lr: float | None = None,
    layer_decay: float = 1.0,
    embedding_lr: float | None = None,
    weight_decay: float = 0.01,
    batch_size: int = 32,
    val_fraction: float = 0.15,
    patience: int = 6,
    mask_fraction: float = 0.1,
    keep: tuple[float, float] | None = (0.5, 1.0),
    class_weight: str | None = "balanced",
    state_loss_weight: float = 0.0,
    dropout: float | None = None,
    monitor: str = "loss",
    seed: int = 0,
    key_added: str = "atacformer_finetune",
) -> AnnData:
    """Fine-tune ``model`` in place to predict ``obs[labels_key]`` (and ``obs[organ_key]``) from <cls>.

    ``trainable_layers``: train only the last n encoder layers plus the heads (None = all layers); the
    genome-wide bin-ID embedding table is trained only with ``train_embeddings``. The heads learn at
    ``lr``, the encoder at ``body_lr`` (None = ``lr``) times ``layer_decay**depth`` (depth 0 = last layer).
    A stratified validation split (by label, and by ``batch_key`` if given) drives early stopping:
    ``patience`` epochs without a better validation ``monitor`` ("loss", or "macro_f1" with ties broken
    by the loss); the weights of the best epoch are restored. Cells with a
    missing label are ignored. Augmentation of training cells: ``keep`` = (lo, hi) subsamples each cell to
    a random share of its open bins (other depths; None = off), then ``mask_fraction`` of the rest is
    removed. ``class_weight="balanced"`` weights the cross-entropy by inverse class frequency (None = off);
    ``state_loss_weight`` > 0 keeps the masked-bin (3-state) loss as a regulariser.
    The per-epoch history goes to ``uns[key_added]``."""
    if labels_key not in adata.obs:
        raise ValueError(f"adata.obs has no {labels_key!r} column")
    keep_mask = adata.obs[labels_key].notna().to_numpy()
    labels = adata.obs[labels_key].astype(str).to_numpy()
    names = sorted(set(labels[keep_mask]))
    if len(names) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least two classes to fine-tune, got {names}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cells = cell_dicts(adata, model)
    codes = label_codes(np.where(keep_mask, labels, None), names)
    heads = {"cell_type": (_ensure_head(model, "cell_type", names), codes,
                           _class_weights(codes, len(names), class_weight))}
    if organ_key is not None:
        organs = adata.obs[organ_key].astype(str).to_numpy()
        onames = sorted(set(organs))
        heads["organ"] = (_ensure_head(model, "organ", onames), label_codes(organs, onames), None)
    strata = labels if batch_key is None else labels + "|" + adata.obs[batch_key].astype(str).to_numpy()
    train_idx, val_idx = _split(int(keep_mask.sum()), strata[keep_mask], val_fraction, seed)
    train_idx, val_idx = np.flatnonzero(keep_mask)[train_idx], np.flatnonzero(keep_mask)[val_idx]

    freeze(model, trainable_last_layers=trainable_layers, train_embeddings=train_embeddings)
    groups = _param_groups(model, [h for h, _, _ in heads.values()], lr=lr,
                           body_lr=lr if body_lr is None else body_lr, layer_decay=layer_decay,
                           embedding_lr=embedding_lr, decoder=state_loss_weight > 0)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)

    def run(indices, train: bool) -> tuple[float, float, float]:
        """(mean loss, cell-type accuracy, cell-type macro-F1) over one pass, training if ``train``."""
        model.train(train)
        total, n, true, pred = 0.0, 0, [], []
        for idx, batch in batches(cells, model, batch_size=batch_size, mask_fraction=mask_fraction if train else 0.0,
                                  rng=rng, shuffle=train, indices=indices, keep=keep if train else None):
            with torch.set_grad_enabled(train):
                if train and state_loss_weight > 0:
                    out = model(batch)
                    cls, loss = out.cell_embedding, state_loss_weight * out.losses["state"]  # (B, d), ()
                else:
                    cls, loss = cls_states(model, batch), 0.0  # (B, d)
                for kind, (head, y_all, weight) in heads.items():
                    y = torch.from_numpy(y_all[idx]).to(cls.device)
                    logits = head(cls)  # (B, n_classes)
                    w = None if weight is None else weight.to(cls.device)
                    loss = loss + F.cross_entropy(logits, y, weight=w, ignore_index=-1)
                    if kind == "cell_type":
                        true.append(y_all[idx])
                        pred.append(logits.argmax(1).cpu().numpy())
            if train:
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        true, pred = np.concatenate(true), np.concatenate(pred)
        f1 = macro_f1(true[true >= 0], pred[true >= 0]) if (true >= 0).any() else 0.0
        return total / max(n, 1), float((pred == true).mean()), f1

    if monitor not in ("loss", "macro_f1"):
        raise ValueError(f"monitor must be 'loss' or 'macro_f1', got {monitor!r}")
    history, best, best_score, best_loss, best_epoch, bad = [], None, (-np.inf, -np.inf), np.inf, 0, 0
    with dropout_rate(model, dropout):
        for epoch in range(epochs):
            train_loss, train_acc, _ = run(train_idx, True)
            val_loss, val_acc, val_f1 = run(val_idx, False)
            history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val_loss, "val_accuracy": val_acc, "val_macro_f1": val_f1})
            log.info("finetune epoch %d: train loss %.4f, val loss %.4f, val acc %.3f, val F1 %.3f", epoch,
                     train_loss, val_loss, val_acc, val_f1)
            score = (-val_loss, 0.0) if monitor == "loss" else (val_f1, -val_loss)
            if score[0] > best_score[0] + 1e-4 or (score[0] >= best_score[0] - 1e-4 and score[1] > best_score[1]):
                best, best_score, best_loss, best_epoch, bad = state_dict_copy(model), score, val_loss, epoch, 0
            else:
                bad += 1
                if bad >= patience:
                    break
    model.load_state_dict(best)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    adata.uns[key_added] = {"history": pd.DataFrame(history), "classes": names, "best_val_loss": float(best_loss),
                            "best_epoch": best_epoch, "monitor": monitor,
                            "n_train": len(train_idx), "n_val": len(val_idx)}
    return adata


def knn_probs(ref_X: np.ndarray, ref_codes: np.ndarray, query_X: np.ndarray, n_classes: int, *, k: int) -> np.ndarray:
    """Share of each class among the ``k`` nearest reference cells (cosine), (n_query, n_classes).
    Reference cells with code -1 (missing or unknown label) are ignored."""
    ok = ref_codes >= 0
    return knn_votes(unit_rows(ref_X[ok]), ref_codes[ok], unit_rows(query_X), n_classes, n_neighbors=k)


def annotate(
    query: AnnData, model: Atacformer, *, threshold: float = 0.5, batch_size: int = 64,
    reference: AnnData | None = None, labels_key: str = "cell_type", k: int = 15, knn_weight: float = 0.5,
    key_added: str = "atacformer_label",
) -> AnnData:
    """Predict cell types with the model's <cls> head: ``obs[key_added]`` (label, "unknown" when the
    confidence is below ``threshold``), ``obs[key_added + "_confidence"]`` and the class
    probabilities in ``obsm[key_added + "_probs"]`` (columns in ``uns[key_added]["classes"]``).

    With a labelled ``reference`` (the fine-tuning cells), the head's probabilities are mixed with
    the label shares among the ``k`` nearest reference cells in the fine-tuned <cls> space:
    ``(1 - knn_weight) * head + knn_weight * kNN``."""
    if model.cell_type_head is None:
        raise ValueError("the model has no cell-type head: fine-tune it first (tl.finetune)")
    if not 0.0 <= knn_weight <= 1.0:
        raise ValueError(f"knn_weight must be in [0, 1], got {knn_weight}")
    names = list(model.config.cell_type_names) or [str(i) for i in range(model.config.n_cell_types)]
    emb, probs = cls_outputs(model, cell_dicts(query, model), batch_size=batch_size)
    if reference is not None and knn_weight > 0:
        if labels_key not in reference.obs:
            raise ValueError(f"reference.obs has no {labels_key!r} column")
        ref_emb, _ = cls_outputs(model, cell_dicts(reference, model), batch_size=batch_size)
        codes = label_codes(reference.obs[labels_key], names)  # -1: missing or not a head class
        probs = (1 - knn_weight) * probs + knn_weight * knn_probs(ref_emb, codes, emb, len(names), k=k)
    probs = probs.astype(np.float32)
    conf = probs.max(1)
    label = np.array(names, dtype=object)[probs.argmax(1)]
    label[conf < threshold] = "unknown"
    query.obs[key_added] = pd.Categorical(label)
    query.obs[f"{key_added}_confidence"] = conf
    query.obsm[f"{key_added}_probs"] = probs
    query.uns[key_added] = {"classes": names, "threshold": float(threshold),
                            "knn_weight": float(knn_weight if reference is not None else 0.0), "k": int(k)}
    return query
