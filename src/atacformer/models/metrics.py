"""Pretraining metrics from a forward pass: per-state loss and removed-vs-closed AUROC / AUPRC.

The decoder never materialises the (cells × bins) score matrix; it accumulates a weighted histogram
of the removed-vs-closed log-odds (``logit2 - logit0``, 4,096 buckets over [-30, 30]). AUROC and
average precision are computed from that histogram (ties within a bucket count half, as in
sklearn for tied scores), and histograms from many batches or ranks can simply be summed.
"""

from __future__ import annotations

import torch

from .batch import PackedBatch


def auc_from_hist(hist: torch.Tensor) -> tuple[float, float]:
    """(AUROC, AUPRC) of "removed" (row 1) vs "closed" (row 0) from a (2, n) weighted histogram whose
    buckets are in increasing score order. NaN when either class is empty."""
    neg, pos = hist.double().cpu()
    n_neg, n_pos = float(neg.sum()), float(pos.sum())
    if n_neg <= 0 or n_pos <= 0:
        return float("nan"), float("nan")
    neg_below = torch.cumsum(neg, 0) - neg  # negatives with a strictly lower score
    auroc = float((pos * (neg_below + 0.5 * neg)).sum()) / (n_pos * n_neg)
    tp = torch.flip(torch.cumsum(torch.flip(pos, [0]), 0), [0])  # positives scoring >= bucket
    fp = torch.flip(torch.cumsum(torch.flip(neg, [0]), 0), [0])
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros_like(tp))
    auprc = float((pos / n_pos * precision).sum())
    return auroc, auprc


def state_metrics(output, batch: PackedBatch | None = None) -> dict[str, float]:
    """Per-state mean cross-entropy (``loss_state0/1/2``, unweighted by class) and
    ``auroc_removed`` / ``auprc_removed`` of state 2 vs state 0 from an :class:`AtacformerOutput`.

    ``batch`` is accepted for call-site symmetry (all needed statistics are in ``output``)."""
    del batch
    mean = (output.state_ce_sum / output.state_count.clamp(min=1)).tolist()
    auroc, auprc = auc_from_hist(output.state_hist)
    return {"loss_state0": mean[0], "loss_state1": mean[1], "loss_state2": mean[2],
            "auroc_removed": auroc, "auprc_removed": auprc}
