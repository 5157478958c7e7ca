"""The atacFormer model: config, packed batches, encoder, 3-state decoder, <cls> heads, metrics."""

from .batch import PackedBatch, PaddedBatch, collate_cells, pad_batch
from .config import PRESETS, AtacformerConfig
from .metrics import auc_from_hist, state_metrics
from .model import Atacformer, AtacformerOutput

__all__ = [
    "Atacformer", "AtacformerConfig", "AtacformerOutput", "PRESETS", "PackedBatch", "PaddedBatch",
    "auc_from_hist", "collate_cells", "pad_batch", "state_metrics",
]
