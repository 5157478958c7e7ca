"""The objectives, as training plans on the one engine (:mod:`atacformer.train.engine`).

* :class:`PretrainPlan` — masked-bin 3-state loss (+ <cls> heads, + contrastive views), the model's own loss;
* :class:`ClassifierPlan` — supervised <cls> heads for any label columns (fine-tuning), optional
  masked-bin regulariser, layer-wise learning rates;
* :class:`AdversarialPlan` — batch correction: masked-bin (+ contrastive) loss while a batch
  discriminator reads <cls> through a gradient-reversal layer (Ganin & Lempitsky 2015);
* :class:`QueryPlan` — reference mapping: every model weight frozen, a learned input offset trained on
  the query's masked-bin loss (scArches-style).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Atacformer, state_metrics
from ..models.decoder import HIST_BINS
from .engine import TrainingPlan, parameter_groups


class PretrainPlan(TrainingPlan):
    """Pretraining: the loss of :meth:`Atacformer.forward`; validation adds the per-state loss and the
    removed-vs-closed AUROC/AUPRC over the whole validation set (all ranks)."""

    def __init__(self, model: Atacformer, **kwargs):
        super().__init__(model, **kwargs)
        self._val_sums: tuple[torch.Tensor, ...] | None = None

    def step(self, batch, stage):
        out = self.model(batch)
        logs = dict(out.losses)
        if stage == "train":
            logs.update({k: float(v) for k, v in state_metrics(out).items()})
        else:
            sums = (out.state_ce_sum.detach().double(), out.state_count.detach().double(),
                    out.state_hist.detach().double())
            self._val_sums = (sums if self._val_sums is None
                              else tuple(a + b for a, b in zip(self._val_sums, sums, strict=False)))
        return out.loss, logs

    def on_validation_epoch_start(self) -> None:
        self._val_sums = None

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is None:  # no batch on this rank: still take part in the all-reduce
            self._val_sums = (torch.zeros(3, dtype=torch.float64, device=self.device),) * 2 + (
                torch.zeros(2, HIST_BINS, dtype=torch.float64, device=self.device),)
        ce, count, hist = (self.trainer.strategy.reduce(t, reduce_op="sum") for t in self._val_sums)
        totals = SimpleNamespace(state_ce_sum=ce, state_count=count, state_hist=hist)
        self.log_dict({f"val/{k}": float(v) for k, v in state_metrics(totals).items()}, rank_zero_only=True)


def layer_depths(model: Atacformer) -> dict[str, int]:
    """Depth of each encoder parameter-name prefix: 0 = final norm and top layer, n = token embeddings."""
    n = len(model.encoder.layers)
    depths = {"model.encoder.ln_f": 0, "model.encoder.embed": n}
    depths.update({f"model.encoder.layers.{i}": n - 1 - i for i in range(n)})
    return depths


class ClassifierPlan(TrainingPlan):
    """Supervised <cls> heads, one per label column of ``class_weights`` (``model.heads[column]``, codes in
    ``batch.labels[column]``; -1 = missing, ignored). The loss is the sum of the heads' cross-entropies.

    Parameters
    ----------
    model
        The Atacformer whose heads are trained (heads are attached by the caller: ``model.set_head``).
    class_weights
        Per label column, a (n_classes,) cross-entropy weight tensor or None.
    state_loss_weight
        > 0 keeps the masked-bin loss as a regulariser.
    body_lr_ratio, layer_decay
        Encoder layers learn at ``lr * body_lr_ratio * layer_decay**depth`` (depth 0 = top layer); heads at ``lr``.

    Logs per column ``{column}`` (loss) and ``{column}_accuracy``; validation adds ``macro_f1_{column}``
    and ``macro_f1`` (their mean over the columns, the early-stopping metric).
    """

    def __init__(self, model: Atacformer, *, class_weights: dict[str, torch.Tensor | None],
                 state_loss_weight: float = 0.0, body_lr_ratio: float = 1.0, layer_decay: float = 1.0, **kwargs):
        super().__init__(model, **kwargs)
        missing = [col for col in class_weights if col not in model.heads]
        if missing or not class_weights:
            raise ValueError(f"ClassifierPlan needs a head per label column; the model has none for {missing}")
        self.class_weights = class_weights
        self.state_loss_weight, self.body_lr_ratio, self.layer_decay = state_loss_weight, body_lr_ratio, layer_decay
        self._depths = layer_depths(model)
        self._val_confusion: dict[str, torch.Tensor] = {}

    def _lr_scale(self, name: str) -> float:
        for prefix, depth in self._depths.items():
            if name == prefix or name.startswith(prefix + "."):
                return self.body_lr_ratio * self.layer_decay**depth
        return 1.0  # heads (and the decoder)

    def param_groups(self) -> list[dict]:
        return parameter_groups(self, self.optim.weight_decay, lr_scale=self._lr_scale)

    def step(self, batch, stage):
        m = self.model
        if self.state_loss_weight > 0 and stage == "train":
            out = m(batch)
            cls, loss = out.cell_embedding, self.state_loss_weight * out.losses["state"]
        else:
            h = m.encode(batch)  # (T, d)
            cls, loss = h[batch.cls_index.to(h.device)], 0.0  # (B, d)
        logs = {}
        for col, weight in self.class_weights.items():
            y = batch.label(col).to(cls.device)
            logits = m.heads[col](cls)  # (B, n_classes)
            has = y >= 0
            if bool(has.any()):
                part = F.cross_entropy(logits.float(), y, weight=None if weight is None else weight.to(cls.device),
                                       ignore_index=-1)
                logs[f"{col}_accuracy"] = (logits.argmax(1)[has] == y[has]).float().mean()
                if stage == "val":
                    self._confuse(col, y[has], logits.argmax(1)[has], logits.shape[1])
            else:
                part = logits.sum() * 0  # keeps the head in the graph (DDP)
            loss = loss + part
            logs[col] = part
        return loss, logs

    def _confuse(self, col: str, y: torch.Tensor, pred: torch.Tensor, n: int) -> None:
        if col not in self._val_confusion:
            self._val_confusion[col] = torch.zeros(n, n, dtype=torch.float64, device=y.device)
        self._val_confusion[col] += torch.bincount(y * n + pred, minlength=n * n).reshape(n, n).double()

    def on_validation_epoch_start(self) -> None:
        self._val_confusion = {}

    def on_validation_epoch_end(self) -> None:
        """Macro-F1 of each head over the validation cells of all ranks, and their mean."""
        scores = []
        for col in self.class_weights:  # same order and count on every rank (the all-reduce needs that)
            n = len(self.model.config.heads[col])
            local = self._val_confusion.get(col, torch.zeros(n, n, dtype=torch.float64, device=self.device))
            conf = self.trainer.strategy.reduce(local.clone(), reduce_op="sum")
            tp = conf.diag()
            fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
            seen = conf.sum(1) > 0  # over the true classes, as metrics.macro_f1
            f1 = (2 * tp / (2 * tp + fp + fn).clamp_min(1e-12))[seen]
            score = float(f1.mean()) if len(f1) else 0.0
            scores.append(score)
            self.log(f"val/macro_f1_{col}", score, sync_dist=False)
        self.log("val/macro_f1", sum(scores) / len(scores), sync_dist=False)


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


class AdversarialPlan(TrainingPlan):
    """Batch correction; the batch code of each cell travels in ``batch.batch_label``.

    Loss = masked-bin state loss + ``contrastive_weight`` × InfoNCE (views from cross-batch MNN partners)
    + discriminator cross-entropy, whose gradient reaches the encoder reversed and scaled by
    ``adversary_weight`` × the DANN ramp 2/(1+exp(-10p))-1 over training progress p. The discriminator
    learns at ``discriminator_lr_ratio`` × lr."""

    def __init__(self, model: Atacformer, *, n_batches: int, batch_weights: torch.Tensor, adversary_weight: float,
                 contrastive_weight: float, state0_sample_rate: float | None, discriminator_lr_ratio: float = 3.0,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.discriminator = BatchDiscriminator(model.config.d_model, n_batches)
        self.register_buffer("batch_weights", batch_weights.float())
        self.adversary_weight, self.contrastive_weight = adversary_weight, contrastive_weight
        self.state0_sample_rate, self.discriminator_lr_ratio = state0_sample_rate, discriminator_lr_ratio

    def param_groups(self) -> list[dict]:
        return parameter_groups(self, self.optim.weight_decay,
                                lr_scale=lambda n: (self.discriminator_lr_ratio if n.startswith("discriminator")
                                                    else 1.0))

    def step(self, batch, stage):
        out = self.model(batch, state0_sample_rate=self.state0_sample_rate)
        progress = min(1.0, self.global_step / max(1, self.max_steps))
        ramp = 2 / (1 + torch.exp(torch.tensor(-10.0 * progress))) - 1
        y = batch.batch_label.to(out.cell_embedding.device)
        logits = self.discriminator(grad_reverse(out.cell_embedding, self.adversary_weight * float(ramp)))
        adv = F.cross_entropy(logits, y, weight=self.batch_weights)
        contrastive = out.losses.get("contrastive", logits.sum() * 0)
        loss = out.losses["state"] + self.contrastive_weight * contrastive + adv
        logs = {"state": out.losses["state"], "contrastive": contrastive, "discriminator": adv,
                "discriminator_accuracy": (logits.argmax(1) == y).float().mean()}
        return loss, logs


class InputOffset(nn.Module):
    """A learned vector added to every token embedding (the query's own parameter)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(d_model))

    def hook(self, module, inputs, output):
        return output + self.offset


class QueryPlan(TrainingPlan):
    """Query adaptation: all of ``model`` frozen; an :class:`InputOffset` (registered on the model as
    ``query_offset``) learns the query's masked-bin loss."""

    def __init__(self, model: Atacformer, *, state0_sample_rate: float | None, **kwargs):
        for p in model.parameters():
            p.requires_grad_(False)
        model.query_offset = InputOffset(model.config.d_model).to(model.device)
        model.encoder.embed.register_forward_hook(model.query_offset.hook)
        super().__init__(model, **kwargs)
        self.state0_sample_rate = state0_sample_rate

    def step(self, batch, stage):
        out = self.model(batch, state0_sample_rate=self.state0_sample_rate)
        return out.losses["state"], {"state": out.losses["state"]}
