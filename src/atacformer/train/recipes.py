"""Recipes: one dataclass per task holding every data and training setting, with named presets.

The defaults are the measured methods (benchmarks/RESULTS.md). The CLI reads its defaults from these
classes, the demo uses their presets; nothing else holds a copy. Architecture lives in
:class:`~atacformer.models.AtacformerConfig` (``PretrainRecipe.model`` overrides its preset).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .batcher import BatchSettings
from .data import DataSettings
from .engine import OptimizerSettings, TrainerSettings

#: measured peak learning rate per architecture preset (others: 3e-4)
PRESET_LR = {"tiny": 1e-2}
#: tokens per training sentence (the model's ``max_length``): a longer cell is read through a fresh random subset
#: of its bins at every step, and at inference as the mean over subsets (benchmarks/RESULTS.md, "realistic")
TRAIN_LENGTH = 512


def _replace(obj, **changes):
    """``dataclasses.replace`` that also accepts nested dicts for dataclass fields."""
    out = {}
    for key, value in changes.items():
        current = getattr(obj, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = _replace(current, **value)
        out[key] = value
    return dataclasses.replace(obj, **out)


class _Recipe:
    def replace(self, **changes):
        """A copy with ``changes`` (nested settings as dicts: ``batch={"mask_fraction": 0.2}``)."""
        return _replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PretrainRecipe(_Recipe):
    """Self-supervised pretraining (:func:`atacformer.train.pretrain`).

    Parameters
    ----------
    preset
        Architecture preset of :class:`~atacformer.models.AtacformerConfig` (``tiny``/``small``/``base``).
    model
        Overrides of config fields (architecture and loss weights), e.g. ``{"n_layers": 4}``. The default
        reads sentences of ``max_length`` = :data:`TRAIN_LENGTH` tokens: 10x cells open 2,000–8,000 bins, and
        attention grows with the square of the length.
    optimizer
        :class:`OptimizerSettings`; ``lr`` None = the preset's measured rate (:data:`PRESET_LR`, else 3e-4).
    trainer
        :class:`TrainerSettings` (steps, checkpoint/validation cadence, clipping, progress).
    data
        :class:`DataSettings` (batch size or token budget, ``batch_key``, validation share, workers). The default:
        64 cells a batch (the contrastive loss's negatives), and ``batch_key="auto"`` — every batch from one
        sample (``obs`` ``batch``/``sample``/``library``/``donor``, the first with ≥ 2 values), so the
        contrastive loss cannot separate cells by their library.
    batch
        :class:`BatchSettings` (masking and the contrastive views).
    contrastive_neighbors
        Neighbour graph whose bins the second views borrow: ``"spectral"``, ``"lsi"`` or ``"tfidf"``
        (cosine kNN of the training cells, within each ``batch_key`` group; in-memory inputs only).
    n_neighbors
        Neighbours per cell for the views (one is drawn per view).
    neighbor_scope
        Where a cell's neighbours are searched: ``"group"`` = within its ``batch_key`` group, ``"all"`` = among
        all cells, ``"auto"`` = within its group only when a kNN graph over all cells keeps the group apart (a
        batch effect), else among all cells; when no group stands apart, batches mix the groups too (there is no
        batch effect for them to hide). A small sample's cells then borrow from their own type in a larger
        sample instead of from other types of their own (:func:`~atacformer.train.pretrain.set_view_neighbors`).
    e1_init
        ``"svd"``: bin-ID rows start from the TF-IDF SVD loadings of the training cells (in-memory
        inputs; corpus folders fall back to ``"random"``).
    state_class_weights
        ``"auto"`` = balanced from the closed:open ratio of the training cells, or 3 numbers.
    region_classes
        Region classes of the bins for ``model["decoder"]`` ``region-class``/``class-x-chromosome``/
        ``cross-attention``: a classes file (BED, HOMER output or bin TSV), ``"annotation"``
        (``var['region_class']`` of the input, else the genome's built-in gene annotation), or None
        (``"annotation"`` for the class decoders; the cross-attention decoder then queries chromosomes).
    closed_bins_per_cell
        Cost bound of the masked-bin loss: when the decoder has more bins than this, its closed bins are
        importance-sampled (unbiased) at ``closed_bins_per_cell / n_decoder_bins`` per training step (the
        config's ``state0_sample_rate``, unless ``model`` sets it). Short cells on a few thousand observed
        bins stay exact; 10x-depth cells open most of the genome, where the exact loss would cost
        ~B × 600k (cell, bin) pairs a step; sampled training evaluates (cell, bin) pairs, not the dense grid.
    removed_bins_per_cell
        With that sampling, about this many of a cell's open-but-removed bins (state 2: masked, or left out
        of a long cell's sentence) enter the loss per step, importance-weighted (the config's
        ``state2_sample_max``, unless ``model`` sets it); None = all.
    seed
        Seeds the split, batches, masks, dropout and initialisation.
    """

    preset: str = "tiny"
    model: dict = field(default_factory=lambda: {"decoder_bins": "observed", "contrastive_weight": 5.0,
                                                 "dropout": 0.0, "max_length": TRAIN_LENGTH})
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(lr=None))
    trainer: TrainerSettings = field(default_factory=lambda: TrainerSettings(max_steps=400))
    data: DataSettings = field(default_factory=lambda: DataSettings(batch_size=64, max_tokens=None, batch_key="auto"))
    batch: BatchSettings = field(default_factory=lambda: BatchSettings(contrastive_drop=0.8, neighbor_add=1.0))
    contrastive_neighbors: str = "spectral"
    n_neighbors: int = 10
    neighbor_scope: str = "auto"
    e1_init: str = "svd"
    state_class_weights: str | tuple[float, float, float] = "auto"
    region_classes: str | None = None
    closed_bins_per_cell: int | None = 2_000
    removed_bins_per_cell: int | None = 1_000
    seed: int = 0

    def __post_init__(self):
        if self.contrastive_neighbors not in ("tfidf", "lsi", "spectral") or self.n_neighbors < 1:
            raise ValueError(f"contrastive_neighbors must be 'tfidf', 'lsi' or 'spectral' and n_neighbors >= 1, "
                             f"got {self.contrastive_neighbors!r}, {self.n_neighbors}")
        if self.neighbor_scope not in ("auto", "group", "all"):
            raise ValueError(f"neighbor_scope must be 'auto', 'group' or 'all', got {self.neighbor_scope!r}")
        if self.e1_init not in ("random", "svd"):
            raise ValueError(f"e1_init must be 'random' or 'svd', got {self.e1_init!r}")

    @property
    def lr(self) -> float:
        return self.optimizer.lr if self.optimizer.lr is not None else PRESET_LR.get(self.preset, 3e-4)

    @classmethod
    def demo(cls, seed: int = 0) -> PretrainRecipe:
        """The demo's budget: 400 steps of 32 cells, one dataset per batch, no checkpoints."""
        return cls(trainer=TrainerSettings(max_steps=400, ckpt_every_n_steps=None, log_every_n_steps=8),
                   data=DataSettings(batch_size=32, val_fraction=0.0, batch_key="dataset"), seed=seed)

    @classmethod
    def masked_only(cls, **changes) -> PretrainRecipe:
        """The masked-bin objective alone (no contrastive views, random E1, the whole genome decoded)."""
        base = cls(model={"decoder_bins": "all"}, batch=BatchSettings(), e1_init="random")
        return base.replace(**changes)


@dataclass
class FinetuneRecipe(_Recipe):
    """Supervised fine-tuning of <cls> heads (:func:`atacformer.tl.finetune`).

    Parameters
    ----------
    epochs
        Passes over the training cells (at most; early stopping may end sooner).
    optimizer
        Heads learn at ``optimizer.lr``; the encoder at ``lr * body_lr_ratio * layer_decay**depth``.
    batch_size
        Cells per batch.
    val_fraction
        Stratified validation share (by label, and by ``batch_key`` when given) for early stopping.
    patience
        Validation rounds (one per epoch) without a better ``monitor`` before stopping.
    monitor
        ``"loss"`` or ``"macro_f1"`` of the validation cells.
    batch
        Augmentation of training cells: depth subsampling ``keep`` then ``mask_fraction`` removed.
    class_weight
        ``"balanced"`` (inverse class frequency) or None.
    trainable_layers
        Train only the last n encoder layers (None = all); the bin-ID table only with ``train_embeddings``.
    state_loss_weight
        > 0 keeps the masked-bin loss as a regulariser.
    dropout
        Dropout during fine-tuning (None = the model's).
    """

    epochs: int = 40
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(
        lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=0, min_lr_ratio=1.0))
    batch_size: int = 32
    val_fraction: float = 0.15
    patience: int = 6
    monitor: str = "loss"
    batch: BatchSettings = field(default_factory=lambda: BatchSettings(mask_fraction=0.1, keep=(0.5, 1.0)))
    class_weight: str | None = "balanced"
    trainable_layers: int | None = None
    train_embeddings: bool = False
    body_lr_ratio: float = 1.0
    layer_decay: float = 1.0
    state_loss_weight: float = 0.0
    dropout: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.monitor not in ("loss", "macro_f1"):
            raise ValueError(f"monitor must be 'loss' or 'macro_f1', got {self.monitor!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")

    @classmethod
    def region_sets(cls, seed: int = 0) -> FinetuneRecipe:
        """The measured recipe for region sets (benchmarks/bulk.py; the default of ``tl.finetune`` and
        ``atacformer finetune`` on rows read from BED files): 80 epochs of 16 sets at lr 3e-3, bin-ID table
        trained, no depth or masking augmentation (each batch already reads a fresh random subset of a
        set's bins), the best validation macro-F1 epoch."""
        base = cls(epochs=80, patience=80, batch_size=16, seed=seed, train_embeddings=True, monitor="macro_f1")
        return base.replace(optimizer={"lr": 3e-3}, batch={"keep": None, "mask_fraction": 0.0})


@dataclass
class IntegrateRecipe(_Recipe):
    """Adversarial batch correction (:func:`atacformer.tl.integrate`).

    Parameters
    ----------
    epochs
        Passes over the cells; the cross-batch MNN partners of the contrastive views are recomputed
        at the start of every epoch.
    optimizer
        AdamW for the encoder layers (the discriminator learns 3× faster).
    batch_size
        Cells per batch.
    adversary_weight
        Scale of the reversed discriminator gradient (times the DANN ramp).
    contrastive_weight
        InfoNCE weight (None = the model config's; 0 = off).
    n_neighbors
        Mutual nearest neighbours in the other batches per cell, for the contrastive views.
    correct
        Finish with the label-free MNN correction of the embedding (:func:`atacformer.tl.mnn_correct`).
    correct_n_neighbors
        Mutual neighbours of that correction.
    batch
        Masking of the training cells (second views are made from MNN partners).
    state0_sample_rate
        Closed bins of the masked-bin loss importance-sampled at this rate (speed).
    """

    epochs: int = 10
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(
        lr=3e-4, weight_decay=0.01, betas=(0.9, 0.999), warmup_steps=0, min_lr_ratio=1.0))
    batch_size: int = 32
    adversary_weight: float = 1.0
    contrastive_weight: float | None = None
    n_neighbors: int = 5
    correct: bool = True
    correct_n_neighbors: int = 20
    batch: BatchSettings = field(default_factory=lambda: BatchSettings(contrastive_drop=0.8, neighbor_add=1.0))
    state0_sample_rate: float | None = 0.05
    seed: int = 0


@dataclass
class QueryRecipe(_Recipe):
    """Query-only adaptation for reference mapping (:func:`atacformer.tl.map_query`): ``epochs`` of the
    masked-bin loss training an input offset, every reference weight frozen (0 = no adaptation)."""

    epochs: int = 0
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(
        lr=1e-2, weight_decay=0.0, betas=(0.9, 0.999), warmup_steps=0, min_lr_ratio=1.0))
    batch_size: int = 32
    batch: BatchSettings = field(default_factory=BatchSettings)
    state0_sample_rate: float | None = 0.05
    seed: int = 0
