"""Batch correction (an :class:`~atacformer.train.AdversarialPlan` on the engine) and reference mapping.

:func:`integrate` fine-tunes a copy of the model on the masked-bin objective while a batch
discriminator reads <cls> through a gradient-reversal layer; the contrastive views pair each cell
with its mutual nearest neighbours in the other batches (recomputed every epoch), and by default the
embedding then gets the label-free MNN correction of :mod:`atacformer.tl.mnn` (the adversary alone
moves batch mixing by less than the seed-to-seed noise on real donors, benchmarks/RESULTS.md).
:func:`map_query` places query cells in a reference's embedding space and transfers labels by kNN,
optionally after a query-only adaptation (:class:`~atacformer.train.QueryPlan`).
"""

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
from lightning.pytorch.callbacks import Callback

from ..metrics.labels import knn_predict
from ..models import Atacformer
from ..train import (
    AdversarialPlan,
    AtacformerDataModule,
    DataSettings,
    IntegrateRecipe,
    QueryPlan,
    QueryRecipe,
    TrainerSettings,
    encode_cells,
    fit,
    read_metrics,
)
from ..train.batcher import adata_cells
from ..train.engine import fingerprint, resume_checked, world_size
from ..train.tuning import freeze
from .annotate import label_codes
from .mnn import mnn_pairs, mnn_shift

log = logging.getLogger(__name__)


class MNNPartners(Callback):
    """Per epoch, each cell's mutual nearest neighbours in the other batches on the current <cls>
    embedding: the cells whose bins its contrastive view borrows. The tables are saved in checkpoints,
    so a resumed run builds the same views."""

    def __init__(self, data: AtacformerDataModule, cells: list[dict], batch: np.ndarray, n_neighbors: int):
        self.data, self.cells, self.batch, self.n_neighbors = data, cells, batch, n_neighbors
        self.model: Atacformer | None = None
        data.set_neighbors(provider=self._partners)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.model = pl_module.model

    def _partners(self, epoch: int) -> list[np.ndarray]:
        emb, _ = encode_cells(self.model, self.cells)
        pairs = mnn_pairs(emb, self.batch, n_neighbors=self.n_neighbors)
        log.info("integrate epoch %d: %d cross-batch MNN pairs", epoch, len(pairs) // 2)
        return _partner_lists(pairs, len(self.cells))

    def state_dict(self) -> dict:
        return {"tables": {int(e): [torch.from_numpy(np.asarray(p, dtype=np.int64)) for p in t]
                           for e, t in self.data.neighbors.tables.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.data.neighbors.tables = {int(e): [p.numpy() for p in t] for e, t in state["tables"].items()}


def _partner_lists(pairs: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(pairs[:, 0], kind="stable") if len(pairs) else np.zeros(0, dtype=np.int64)
    pairs = pairs[order]
    bounds = np.searchsorted(pairs[:, 0], np.arange(n + 1)) if len(pairs) else np.zeros(n + 1, dtype=np.int64)
    return [pairs[bounds[i] : bounds[i + 1], 1] for i in range(n)]


def integrate_model(adata: AnnData, model: Atacformer, *, batch_key: str, recipe: IntegrateRecipe | None = None,
                    out_dir: str | Path | None = None, resume: str | Path | None = None,
                    trainer_kwargs: dict | None = None) -> tuple[Atacformer, pd.DataFrame]:
    """Adversarially fine-tune a copy of ``model`` across ``obs[batch_key]``; (corrected model, history).
    Parameters as :func:`integrate`; ``adata`` and ``model`` are not changed."""
    r = recipe or IntegrateRecipe()
    L.seed_everything(r.seed, verbose=False)  # the discriminator and everything after depend on the seed only
    world = world_size(trainer_kwargs)
    if world > 1 and out_dir is None:
        raise ValueError("integration on several processes needs an out_dir shared by all ranks")
    names = _batches(adata, batch_key)
    cw = model.config.contrastive_weight if r.contrastive_weight is None else r.contrastive_weight
    if cw > 0 and model.contrastive_head is None:
        raise ValueError("contrastive_weight > 0 needs a model pretrained with the contrastive objective")
    corrected = copy.deepcopy(model).train()
    freeze(corrected)  # encoder layers train; the bin-ID table and the decoder stay as pretrained
    corrected.decoder.requires_grad_(False)
    batch = adata.obs[batch_key].astype(str).to_numpy()
    codes = label_codes(batch, names)
    weights = torch.tensor(len(codes) / (len(names) * np.bincount(codes, minlength=len(names))), dtype=torch.float32)
    steps = -(-adata.n_obs // (r.batch_size * world))  # per epoch (each rank streams its share)
    views = r.batch if cw > 0 else type(r.batch)(mask_fraction=r.batch.mask_fraction)
    data = AtacformerDataModule(adata, data=DataSettings(batch_size=r.batch_size, val_fraction=0.0), batch=views,
                                max_length=corrected.config.max_length, codes={"batch_label": codes}, seed=r.seed)
    callbacks = [MNNPartners(data, adata_cells(adata, corrected), batch, r.n_neighbors)] if cw > 0 else []
    plan = AdversarialPlan(corrected, n_batches=len(names), batch_weights=weights, adversary_weight=r.adversary_weight,
                           contrastive_weight=cw, state0_sample_rate=r.state0_sample_rate, optimizer=r.optimizer,
                           max_steps=r.epochs * steps, seed=r.seed,
                           run_info={"task": "integrate", "data": fingerprint(data.fingerprint(), batch_key),
                                     "recipe": fingerprint({k: v for k, v in r.to_dict().items() if k != "epochs"})})
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(out_dir) if out_dir is not None else Path(tmp)
        run.mkdir(parents=True, exist_ok=True)
        settings = TrainerSettings(max_steps=r.epochs * steps, log_every_n_steps=1,
                                   ckpt_every_n_steps=steps if out_dir is not None else None)
        fit(plan, data, out_dir=run, settings=settings, resume=resume_checked(resume, run, plan.run_info),
            callbacks=callbacks,
            trainer_kwargs=trainer_kwargs)
        m = read_metrics(run / "logs")
    m["epoch"] = m["step"] // steps
    cols = ["train/state", "train/contrastive", "train/discriminator", "train/discriminator_accuracy"]
    history = m.groupby("epoch")[cols].mean().reset_index().rename(columns=lambda c: c.replace("train/", ""))
    corrected.requires_grad_(True)
    return corrected.eval(), history


def _batches(adata: AnnData, batch_key: str) -> list[str]:
    if batch_key not in adata.obs:
        raise ValueError(f"adata.obs has no {batch_key!r} column")
    names = sorted(adata.obs[batch_key].astype(str).unique())
    if len(names) < 2:
        raise ValueError(f"obs[{batch_key!r}] has a single batch ({names}); nothing to integrate")
    return names


def integrate(
    adata: AnnData,
    model: Atacformer,
    *,
    batch_key: str,
    recipe: IntegrateRecipe | None = None,
    reference_batch: str | None = None,
    out_dir: str | Path | None = None,
    key_added: str = "X_atacformer_integrated",
    trainer_kwargs: dict | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Batch-corrected cell embeddings across ``obs[batch_key]``.

    Parameters
    ----------
    adata
        Cells × bins with a batch column.
    model
        A pretrained model (not changed; :func:`integrate_model` returns the corrected copy).
    batch_key
        ``obs`` column of the batches (donors, samples, libraries).
    recipe
        :class:`~atacformer.train.IntegrateRecipe` (epochs, adversary and contrastive weights, MNN settings).
    reference_batch
        Batch the others are moved toward by the MNN correction (default: the largest).
    out_dir
        Run folder for checkpoints (one per epoch) and logs; None = a temporary folder.
    key_added
        Output key.
    trainer_kwargs
        ``lightning.Trainer`` options.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets ``obsm[key_added]`` (the corrected embedding: MNN-corrected unit vectors
    when ``recipe.correct``, else the fine-tuned model's output), ``obsm[key_added + "_model"]`` (the
    fine-tuned model's own output, with ``correct``) and ``uns[key_added]`` (history, batches, settings).
    """
    r = recipe or IntegrateRecipe()
    names = _batches(adata, batch_key)
    if reference_batch is not None and reference_batch not in names:
        raise ValueError(f"reference_batch {reference_batch!r} is not in obs[{batch_key!r}] ({names})")
    adata = adata.copy() if copy else adata
    corrected, history = integrate_model(adata, model, batch_key=batch_key, recipe=r, out_dir=out_dir,
                                         trainer_kwargs=trainer_kwargs)
    write_integrated(adata, corrected, history, batch_key=batch_key, recipe=r, reference_batch=reference_batch,
                     key_added=key_added)
    return adata if copy else None


def write_integrated(adata: AnnData, corrected: Atacformer, history: pd.DataFrame, *, batch_key: str,
                     recipe: IntegrateRecipe, reference_batch: str | None, key_added: str) -> None:
    """Embed ``adata`` with the corrected model (+ MNN correction) into ``obsm``/``uns`` as :func:`integrate`."""
    emb, _ = encode_cells(corrected, adata_cells(adata, corrected))
    info = {"history": history, "batches": _batches(adata, batch_key), "batch_key": batch_key,
            "correct": recipe.correct, "n_neighbors": recipe.n_neighbors}
    if recipe.correct:
        adata.obsm[f"{key_added}_model"] = emb
        emb, info["mnn_correct"] = mnn_shift(emb, adata.obs[batch_key].astype(str).to_numpy(),
                                             reference=reference_batch, n_neighbors=recipe.correct_n_neighbors)
    adata.obsm[key_added] = emb
    adata.uns[key_added] = info


def _query_adapted(model: Atacformer, query: AnnData, r: QueryRecipe) -> Atacformer:
    """Copy of ``model`` with all weights frozen plus a trained input offset (masked-bin loss on the query)."""
    L.seed_everything(r.seed, verbose=False)
    adapted = copy.deepcopy(model).train()
    steps = -(-query.n_obs // r.batch_size)
    data = AtacformerDataModule(query, data=DataSettings(batch_size=r.batch_size, val_fraction=0.0), batch=r.batch,
                                max_length=adapted.config.max_length, codes={}, seed=r.seed)
    plan = QueryPlan(adapted, state0_sample_rate=r.state0_sample_rate, optimizer=r.optimizer,
                     max_steps=r.epochs * steps, seed=r.seed)
    with tempfile.TemporaryDirectory() as tmp:
        fit(plan, data, out_dir=Path(tmp), settings=TrainerSettings(max_steps=r.epochs * steps, ckpt_every_n_steps=None,
                                                                    log_every_n_steps=1))
    return adapted.eval()


def map_query(
    adata: AnnData,
    reference: AnnData,
    model: Atacformer,
    *,
    labels_key: str = "cell_type",
    use_rep: str = "X_atacformer",
    n_neighbors: int = 15,
    recipe: QueryRecipe | None = None,
    key_added: str = "atacformer_mapped",
    copy: bool = False,
) -> AnnData | None:
    """Embed query cells into the reference space of ``model`` and transfer ``reference.obs[labels_key]``
    by majority vote of the ``n_neighbors`` nearest reference cells.

    Parameters
    ----------
    adata
        Query cells × bins.
    reference
        Labelled reference cells; not changed (its embedding ``obsm[use_rep]`` is used when present,
        else computed with ``model``).
    model
        The reference model.
    labels_key, use_rep, n_neighbors
        Reference label column, embedding key, neighbours of the vote.
    recipe
        :class:`~atacformer.train.QueryRecipe`; ``epochs > 0`` first trains a query-only input offset on
        the masked-bin loss with every reference weight frozen.
    key_added
        Output key.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets ``obsm[use_rep]``, ``obs[key_added]``, ``obs[key_added + "_uncertainty"]``
    (1 − share of neighbours voting for the label) and ``uns[key_added]``.
    """
    r = recipe or QueryRecipe()
    if labels_key not in reference.obs:
        raise ValueError(f"reference.obs has no {labels_key!r} column")
    adata = adata.copy() if copy else adata
    if use_rep in reference.obsm:
        ref = np.asarray(reference.obsm[use_rep])
    else:
        ref, _ = encode_cells(model, adata_cells(reference, model))
    mapper = _query_adapted(model, adata, r) if r.epochs > 0 else model
    adata.obsm[use_rep], _ = encode_cells(mapper, adata_cells(adata, mapper))
    labels, conf = knn_predict(ref, reference.obs[labels_key].astype(str), adata.obsm[use_rep], n_neighbors=n_neighbors)
    adata.obs[key_added] = pd.Categorical(labels)
    adata.obs[f"{key_added}_uncertainty"] = 1.0 - conf
    adata.uns[key_added] = {"n_neighbors": n_neighbors, "use_rep": use_rep, "query_epochs": r.epochs,
                            "labels_key": labels_key}
    return adata if copy else None
