"""``<cls>`` heads: supervised classifiers, one per label column (cell type, tissue, assay, ...; missing
labels (-1) ignored), and the contrastive projection with its symmetric InfoNCE loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierHead(nn.Module):
    """<cls> (d) → Linear → GELU → dropout → Linear → n_classes logits."""

    def __init__(self, d_model: int, hidden: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)  # (B, n_classes)


def head_key(column: str) -> str:
    """Module name of the head of label ``column``: any column name (``"type"``, ``"a.b"``) is a valid key."""
    return "col_" + column.replace("%", "%25").replace(".", "%2E")


def _column(key: str) -> str:
    return key.removeprefix("col_").replace("%2E", ".").replace("%25", "%")


class LabelHeads(nn.ModuleDict):
    """The supervised <cls> heads by label column: ``heads["cell_type"]`` is a :class:`ClassifierHead`;
    iteration, ``keys()`` and ``items()`` give column names (module names are :func:`head_key`)."""

    def __getitem__(self, column: str) -> ClassifierHead:
        return super().__getitem__(head_key(column))

    def __setitem__(self, column: str, head: nn.Module) -> None:
        super().__setitem__(head_key(column), head)

    def __delitem__(self, column: str) -> None:
        super().__delitem__(head_key(column))

    def __contains__(self, column: str) -> bool:
        return super().__contains__(head_key(column))

    def __iter__(self):
        return (_column(k) for k in super().__iter__())

    def keys(self):
        return list(iter(self))

    def items(self):
        return [(_column(k), m) for k, m in super().items()]

    def get(self, column: str, default=None):
        return self[column] if column in self else default


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over cells with a label (>= 0); 0 (still in the graph) when none has one."""
    labels = labels.to(logits.device)
    if bool((labels >= 0).any()):
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)
    return logits.sum() * 0.0  # keeps every parameter in the graph (DDP needs that)


class ProjectionHead(nn.Module):
    """<cls> (d) → Linear → ReLU → Linear → ``dim`` (SimCLR projection; its output is only used by the loss)."""

    def __init__(self, d_model: int, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)  # (B, dim)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``z1`` (B, D) and of ``z2`` are a positive pair, all other rows of the
    other view are negatives; cosine similarities / ``temperature``, cross-entropy both ways, averaged."""
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    logits = z1 @ z2.T / temperature  # (B, B)
    target = torch.arange(z1.shape[0], device=z1.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
