"""Supervised ``<cls>`` heads (cell type, organ) with missing labels (-1) ignored."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassifierHead(nn.Module):
    """<cls> (d) → Linear → GELU → dropout → Linear → n_classes logits."""

    def __init__(self, d_model: int, hidden: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.net(cls)  # (B, n_classes)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over cells with a label (>= 0); 0 (still in the graph) when none has one."""
    labels = labels.to(logits.device)
    if bool((labels >= 0).any()):
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)
    return logits.sum() * 0.0  # keeps every parameter in the graph (DDP needs that)
