"""Batch correction by adversarial fine-tuning, and reference mapping by kNN label transfer.

:func:`integrate` fine-tunes a copy of the model on the masked-bin objective while a batch
discriminator reads the <cls> embedding through a gradient-reversal layer (Ganin & Lempitsky 2015):
the encoder keeps modelling accessibility but learns to hide which batch a cell came from.
:func:`map_query` places query cells in a reference's embedding space and transfers labels by kNN
(optionally after a query-only fine-tune of a learned input offset, all reference weights frozen,
in the spirit of scArches).

The adversarial fine-tune alone moves batch mixing (iLISI) by less than the seed-to-seed noise on
real donors (benchmarks/RESULTS.md), so by default :func:`integrate` finishes with the label-free MNN
correction of :mod:`atacformer.tl.mnn` on the fine-tuned embedding.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from ..metrics.labels import knn_predict
from ..models import Atacformer
from ._torch import batches, cell_dicts, embed_cells, freeze, label_codes
from .mnn import mnn_pairs, mnn_shift

log = logging.getLogger(__name__)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``-weight`` backward."""
    return _GradReverse.apply(x, weight)


class BatchDiscriminator(nn.Module):
    """<cls> (d) → hidden → n_batches logits."""

    def __init__(self, d_model: int, n_batches: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_batches))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)  # (B, n_batches)


def _with_partners(cells: list[dict], pairs: np.ndarray) -> list[dict]:
    """Cells with ``neighbor_bin_ids`` = the open bins of their MNN partners; one is drawn per view
    (cells without a partner get none)."""
    partners: list[list[int]] = [[] for _ in cells]
    for i, j in pairs:
        partners[i].append(int(j))
    return [{**c, "neighbor_bin_ids": [cells[j]["bin_ids"] for j in ps] if ps else None}
            for c, ps in zip(cells, partners)]


def integrate(
    adata: AnnData,
    model: Atacformer,
    *,
    batch_key: str,
    epochs: int = 10,
    lr: float = 3e-4,
    adversary_weight: float = 1.0,
    contrastive_weight: float | None = None,
    mnn_k: int = 5,
    correct: bool = True,
    correct_k: int = 20,
    reference_batch: str | None = None,
    mask_fraction: float = 0.15,
    batch_size: int = 32,
    state0_sample_rate: float | None = 0.05,
    seed: int = 0,
    key_added: str = "X_atacformer_integrated",
) -> Atacformer:
    """Adversarially fine-tune a copy of ``model`` across ``obs[batch_key]`` and write the corrected
    <cls> embedding to ``obsm[key_added]``. Returns the corrected model (the input model is unchanged).

    Loss per step: masked-bin state loss (closed bins sampled at ``state0_sample_rate`` for speed)
    + cross-entropy of the discriminator, whose gradient reaches the encoder reversed and scaled by
    ``adversary_weight`` × a DANN ramp 2/(1+exp(-10p))-1 over training progress p
    + (models pretrained with the contrastive <cls> objective) ``contrastive_weight`` × that InfoNCE
    loss (default: the model config's weight; 0 = off), whose second views are built from each cell's
    mutual nearest neighbours in the other batches (``mnn_k`` neighbours each way, cosine on the
    current <cls> embedding, recomputed every epoch) as in scDML/Portal-style contrastive integration:
    matching populations are pulled together without labels. History (state/contrastive loss,
    discriminator loss/accuracy, MNN pairs per epoch) in ``uns["atacformer_integrate"]``.

    ``correct=True`` (default) then applies the MNN correction (:func:`~atacformer.tl.mnn_correct`) to the fine-tuned
    embedding (``correct_k`` mutual neighbours, toward ``reference_batch``, default the largest batch):
    ``obsm[key_added]`` holds unit-length vectors, the other batches moved onto the reference; the
    fine-tuned model's own output goes to ``obsm[key_added + "_model"]``. ``correct=False`` writes the
    model's output to ``obsm[key_added]`` only."""
    if batch_key not in adata.obs:
        raise ValueError(f"adata.obs has no {batch_key!r} column")
    names = sorted(adata.obs[batch_key].astype(str).unique())
    if len(names) < 2:
        raise ValueError(f"obs[{batch_key!r}] has a single batch ({names}); nothing to integrate")
    if reference_batch is not None and reference_batch not in names:
        raise ValueError(f"reference_batch {reference_batch!r} is not in obs[{batch_key!r}] ({names})")
    cw = model.config.contrastive_weight if contrastive_weight is None else contrastive_weight
    if cw > 0 and model.contrastive_head is None:
        raise ValueError("contrastive_weight > 0 needs a model pretrained with the contrastive objective")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    corrected = copy.deepcopy(model).train()
    freeze(corrected)  # encoder layers train; the bin-ID table and the decoder stay as pretrained
    for p in corrected.decoder.parameters():
        p.requires_grad_(False)
    cells = cell_dicts(adata, corrected)
    batch = adata.obs[batch_key].astype(str).to_numpy()
    codes = label_codes(batch, names)
    # inverse-frequency class weights: imbalanced batches must not make "always the big batch" a good guess
    weight = torch.tensor(len(codes) / (len(names) * np.bincount(codes, minlength=len(names))), dtype=torch.float32)
    disc = BatchDiscriminator(corrected.config.d_model, len(names)).to(corrected.device)
    params = [p for p in corrected.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "lr": lr},
                             {"params": disc.parameters(), "lr": lr * 3}], weight_decay=0.01)
    n_steps, step, history = epochs * -(-len(cells) // batch_size), 0, []
    for epoch in range(epochs):
        sums, n_pairs = np.zeros(4), 0
        if cw > 0:
            emb = embed_cells(corrected, cells)
            pairs = mnn_pairs(emb, batch, n_neighbors=mnn_k)
            n_pairs = len(pairs) // 2
            steps = batches(_with_partners(cells, pairs), corrected, batch_size=batch_size,
                            mask_fraction=mask_fraction, rng=rng, shuffle=True,
                            contrastive_drop=corrected.config.contrastive_drop, contrastive_neighbor_add=1.0)
        else:
            steps = batches(cells, corrected, batch_size=batch_size, mask_fraction=mask_fraction, rng=rng,
                            shuffle=True)
        for idx, b in steps:
            ramp = 2 / (1 + np.exp(-10 * step / max(n_steps, 1))) - 1
            out = corrected(b, state0_sample_rate=state0_sample_rate)
            y = torch.from_numpy(codes[idx]).to(corrected.device)
            logits = disc(grad_reverse(out.cell_embedding, adversary_weight * ramp))  # (B, n_batches)
            adv = F.cross_entropy(logits, y, weight=weight.to(logits.device))
            contrastive = out.losses.get("contrastive", torch.zeros(()))
            loss = out.losses["state"] + cw * contrastive + adv
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + list(disc.parameters()), 1.0)
            opt.step()
            step += 1
            sums += [float(out.losses["state"].detach()) * len(idx), float(contrastive.detach()) * len(idx),
                     float(adv.detach()) * len(idx), float((logits.argmax(1) == y).sum())]
        history.append({"epoch": epoch, "state_loss": sums[0] / len(cells), "contrastive_loss": sums[1] / len(cells),
                        "discriminator_loss": sums[2] / len(cells), "discriminator_accuracy": sums[3] / len(cells),
                        "mnn_pairs": n_pairs})
        log.info("integrate epoch %d: %s", epoch, history[-1])
    for p in corrected.parameters():
        p.requires_grad_(True)
    corrected.eval()
    emb = embed_cells(corrected, cells)
    info = {"history": pd.DataFrame(history), "batches": names, "batch_key": batch_key, "contrastive_weight": cw,
            "mnn_k": mnn_k, "correct": correct}
    if correct:
        adata.obsm[f"{key_added}_model"] = emb
        emb, info["mnn_correct"] = mnn_shift(emb, batch, reference=reference_batch, n_neighbors=correct_k)
    adata.obsm[key_added] = emb
    adata.uns["atacformer_integrate"] = info
    return corrected


class _InputOffset(nn.Module):
    """A learned vector added to every token embedding (the query's own parameter)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(d_model))

    def hook(self, module, inputs, output):
        return output + self.offset


def _query_adapted(model: Atacformer, cells: list[dict], *, epochs: int, lr: float, batch_size: int,
                   state0_sample_rate: float | None, seed: int) -> Atacformer:
    """Copy of ``model`` with all weights frozen plus a trained input offset (masked-bin objective on the query)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    adapted = copy.deepcopy(model).train()
    for p in adapted.parameters():
        p.requires_grad_(False)
    offset = _InputOffset(adapted.config.d_model).to(adapted.device)
    adapted.encoder.embed.register_forward_hook(offset.hook)
    adapted.query_offset = offset  # registered as a submodule so it moves/saves with the model
    opt = torch.optim.Adam(offset.parameters(), lr=lr)
    for _ in range(epochs):
        for _, batch in batches(cells, adapted, batch_size=batch_size, mask_fraction=0.15, rng=rng, shuffle=True):
            loss = adapted(batch, state0_sample_rate=state0_sample_rate).losses["state"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return adapted.eval()


def map_query(
    query: AnnData,
    reference: AnnData,
    model: Atacformer,
    *,
    labels_key: str = "cell_type",
    use_rep: str = "X_atacformer",
    k: int = 15,
    query_epochs: int = 0,
    lr: float = 1e-2,
    batch_size: int = 32,
    state0_sample_rate: float | None = 0.05,
    seed: int = 0,
    key_added: str = "atacformer_mapped",
) -> AnnData:
    """Embed ``query`` into the reference space of ``model`` and transfer ``reference.obs[labels_key]``
    by majority vote of the ``k`` nearest reference cells.

    Writes ``query.obsm[use_rep]``, ``query.obs[key_added]`` and ``query.obs[key_added + "_uncertainty"]``
    (1 − share of neighbours voting for the label). The reference embedding is computed with ``model``
    if ``reference.obsm[use_rep]`` is missing. ``query_epochs > 0`` first trains a query-only input
    offset on the masked-bin objective with every reference weight frozen."""
    if labels_key not in reference.obs:
        raise ValueError(f"reference.obs has no {labels_key!r} column")
    if use_rep not in reference.obsm:
        reference.obsm[use_rep] = embed_cells(model, cell_dicts(reference, model))
    cells = cell_dicts(query, model)
    mapper = model
    if query_epochs > 0:
        mapper = _query_adapted(model, cells, epochs=query_epochs, lr=lr, batch_size=batch_size,
                                state0_sample_rate=state0_sample_rate, seed=seed)
    query.obsm[use_rep] = embed_cells(mapper, cells)
    labels, conf = knn_predict(np.asarray(reference.obsm[use_rep]), reference.obs[labels_key].astype(str),
                               query.obsm[use_rep], n_neighbors=k)
    query.obs[key_added] = pd.Categorical(labels)
    query.obs[f"{key_added}_uncertainty"] = 1.0 - conf
    query.uns[key_added] = {"k": k, "use_rep": use_rep, "query_epochs": query_epochs, "labels_key": labels_key}
    return query
