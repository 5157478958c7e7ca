"""The atacFormer model: config, packed batches, encoder, 3-state decoder, <cls> heads, metrics."""

from .batch import PackedBatch, PaddedBatch, collate_cells, pad_batch
from .config import PRESETS, AtacformerConfig
from .craft import CraftConfig, CraftModel
from .metrics import auc_from_hist, state_metrics
from .model import Atacformer, AtacformerOutput
from .rna import GeneVocab, RnaEncoderConfig

__all__ = [
    "PRESETS",
    "Atacformer",
    "AtacformerConfig",
    "AtacformerOutput",
    "CraftConfig",
    "CraftModel",
    "GeneVocab",
    "PackedBatch",
    "PaddedBatch",
    "RnaEncoderConfig",
    "auc_from_hist",
    "collate_cells",
    "pad_batch",
    "state_metrics",
]
