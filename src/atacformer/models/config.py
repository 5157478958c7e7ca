"""Model configuration: one JSON-serialisable dataclass, with ``tiny``/``small``/``base`` presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import write_json
from ..genome import BinIndex
from ..tokenize.vocab import BinVocab

CONFIG_FILE = "config.json"

#: Architecture sizes of the presets; everything else comes from the vocabulary or the defaults.
PRESETS: dict[str, dict] = {
    "tiny": dict(k=16, d_model=32, n_layers=2, n_heads=2, d_ff=64, eos_dim=16, decoder_hidden=32,
                 head_hidden=32, decoder_chunk_size=16384),
    "small": dict(k=64, d_model=256, n_layers=4, n_heads=4, d_ff=1024, eos_dim=64, decoder_hidden=128,
                  head_hidden=256),
    "base": dict(k=64, d_model=512, n_layers=12, n_heads=8, d_ff=2048, eos_dim=64, decoder_hidden=256,
                 head_hidden=512),
}


#: Loss names of the model itself: no label column may be called so.
RESERVED_LOSS_NAMES = frozenset({"state", "contrastive", "contrastive_decoder", "loss"})

#: Head fields of configs before heads were keyed by label column (cell type and organ only).
LEGACY_HEAD_FIELDS = ("cell_type", "organ")


def legacy_heads(d: dict) -> dict:
    """``d`` with the old per-slot head fields (``n_cell_types``/``cell_type_names``/``cell_type_loss_weight``,
    the same for ``organ``) turned into ``heads`` and ``head_loss_weights``; anything else unchanged."""
    d = dict(d)
    heads, weights = dict(d.pop("heads", None) or {}), dict(d.pop("head_loss_weights", None) or {})
    for slot in LEGACY_HEAD_FIELDS:
        n, names = d.pop(f"n_{slot}s", 0) or 0, list(d.pop(f"{slot}_names", None) or [])
        weight = d.pop(f"{slot}_loss_weight", None)
        if names and n and len(names) != n:
            raise ValueError(f"{slot}_names must have n_{slot}s={n} entries, got {len(names)}")
        if n or names:
            heads.setdefault(slot, names or [str(i) for i in range(n)])
            if weight is not None and float(weight) != 1.0:
                weights.setdefault(slot, float(weight))
    return {**d, "heads": heads, "head_loss_weights": weights}


#: Fields that older configs held but the network never read: data / recipe settings, now in
#: :class:`atacformer.train.PretrainRecipe`. :meth:`AtacformerConfig.from_dict` drops them.
RECIPE_FIELDS = frozenset({"mask_fraction", "contrastive_drop", "contrastive_neighbor_add", "contrastive_neighbors",
                           "contrastive_n_neighbors", "e1_init"})


@dataclass
class AtacformerConfig:
    """Everything needed to rebuild an :class:`~atacformer.models.Atacformer` (and its vocabulary).

    The vocabulary is recorded by ``genome``, ``bin_size`` and ``chrom_sizes`` (modelled chromosomes,
    in order) and the decoder's ``decoder``/``region_classes``, so :meth:`vocab` rebuilds the exact
    :class:`BinVocab` the model was trained on. Configs saved before the decoder choice load as
    ``decoder="chromosome"``.
    """

    # vocabulary / coordinates
    vocab_size: int
    genome: str
    bin_size: int
    chrom_sizes: dict[str, int]
    n_chroms: int
    # encoder
    k: int = 64  # factorized embedding width: E1 is V x k, E2 is k x d
    d_model: int = 512
    n_layers: int = 12
    n_heads: int = 8
    d_ff: int = 2048
    max_length: int = 5000
    dropout: float = 0.1
    dna_dim: int = 0  # width of the frozen per-bin DNA table (0 = none)
    # decoder: <eos_c> (d) -> eos_dim, concat E1[bin] (k) -> decoder_hidden -> 3 logits
    eos_dim: int = 64
    decoder_hidden: int = 256
    decoder_chunk_size: int = 4096  # bins per activation-checkpointed chunk
    state_class_weights: tuple[float, float, float] = (1.0, 10.0, 10.0)  # pretrain's default: balanced from data
    state0_sample_rate: float | None = None  # None = all bins; else importance-sample closed bins (training only)
    state2_sample_max: int | None = None  # with state0 sampling: ≈ this many removed bins per cell (None = all)
    decoder_bins: str = "all"  # "all" bins of the genome, or the "observed" ones (open in >= 1 training cell)
    n_decoder_bins: int = 0  # how many observed bins (set by pretrain from the data; the ids are saved weights)
    # which <eos> regions the decoder reads (atacformer.tokenize.vocab): "chromosome" | "region-class" |
    # "class-x-chromosome" | "cross-attention" (learned queries, per class if region_classes else per chromosome)
    decoder: str = "chromosome"
    region_classes: list[str] = field(default_factory=list)  # class names (the per-bin codes are saved weights)
    # supervised <cls> heads: label column (an obs / sample-table column) -> its class names, in code order
    heads: dict[str, list[str]] = field(default_factory=dict)
    head_hidden: int = 512
    # loss
    state_loss_weight: float = 1.0
    head_loss_weights: dict[str, float] = field(default_factory=dict)  # per label column; missing = 1.0
    # contrastive objective on <cls> (0 = off): InfoNCE between two views of each cell, on a projection
    # (how the views are made is a recipe setting: atacformer.train.BatchSettings)
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    contrastive_dim: int = 64  # projection output width
    # contrastive decoder (0 = off): from a second view's region outputs, predict which bins were added from
    # the neighbour and which of the cell's bins were dropped (atacformer.models.model, "contrastive decoder")
    contrastive_decoder_weight: float = 0.0

    def __post_init__(self):
        if isinstance(self.state_class_weights, str):
            raise ValueError(f"state_class_weights={self.state_class_weights!r}: 'auto' is resolved from the data by "
                             "pretrain (build_config); a config needs 3 numbers")
        self.state_class_weights = tuple(float(w) for w in self.state_class_weights)
        self.chrom_sizes = {str(c): int(n) for c, n in dict(self.chrom_sizes).items()}
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if len(self.state_class_weights) != 3:
            raise ValueError(f"state_class_weights needs 3 values, got {self.state_class_weights}")
        if self.state0_sample_rate is not None and not 0 < self.state0_sample_rate <= 1:
            raise ValueError(f"state0_sample_rate must be in (0, 1] or None, got {self.state0_sample_rate}")
        if self.state2_sample_max is not None and self.state2_sample_max < 1:
            raise ValueError(f"state2_sample_max must be >= 1 or None, got {self.state2_sample_max}")
        if self.decoder_bins not in ("all", "observed") or self.n_decoder_bins < 0:
            raise ValueError(f"decoder_bins must be 'all' or 'observed' (n_decoder_bins >= 0), got "
                             f"{self.decoder_bins!r} ({self.n_decoder_bins})")
        self.region_classes = [str(c) for c in self.region_classes]
        self.vocab()  # checks decoder / region_classes / vocab_size
        if self.contrastive_decoder_weight < 0:
            raise ValueError(f"contrastive_decoder_weight must be >= 0, got {self.contrastive_decoder_weight}")
        if self.contrastive_weight < 0 or self.contrastive_temperature <= 0:
            raise ValueError("contrastive_weight must be >= 0 and contrastive_temperature > 0")
        self.heads = {str(col): [str(n) for n in names] for col, names in dict(self.heads).items()}
        self.head_loss_weights = {str(col): float(w) for col, w in dict(self.head_loss_weights).items()}
        for col, names in self.heads.items():
            if col in RESERVED_LOSS_NAMES or not col:
                raise ValueError(f"label column {col!r} cannot name a head (reserved: {sorted(RESERVED_LOSS_NAMES)})")
            if len(names) < 1 or len(set(names)) != len(names):
                raise ValueError(f"head {col!r} needs distinct class names, got {names}")
        if set(self.head_loss_weights) - set(self.heads):
            extra = sorted(set(self.head_loss_weights) - set(self.heads))
            raise ValueError(f"head_loss_weights for columns without a head: {extra}")

    # ------------------------------------------------------------ construction
    @classmethod
    def from_vocab(cls, vocab: BinVocab, **kwargs) -> AtacformerConfig:
        """A config with the vocabulary fields filled from ``vocab`` and the rest from ``kwargs``;
        ``decoder``/``region_classes`` default to the vocabulary's (the size follows them). The old head fields
        ``n_cell_types=``, ``cell_type_names=``, ... are accepted (:func:`legacy_heads`)."""
        kwargs.setdefault("decoder", vocab.decoder)
        kwargs.setdefault("region_classes", list(vocab.region_classes))
        vocab = vocab.with_decoder(kwargs["decoder"], kwargs["region_classes"])
        return cls(
            vocab_size=len(vocab),
            genome=vocab.genome.name,
            bin_size=vocab.bin_size,
            chrom_sizes=dict(vocab.genome.chrom_sizes),
            n_chroms=vocab.n_chroms,
            **legacy_heads(kwargs),
        )

    @classmethod
    def from_preset(cls, name: str, vocab: BinVocab, **overrides) -> AtacformerConfig:
        """``tiny`` (CPU tests), ``small`` or ``base`` (the design: k=64, d=512, 12 layers, 8 heads)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
        unknown = set(legacy_heads(overrides)) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls.from_vocab(vocab, **{**PRESETS[name], **overrides})

    @property
    def cell_type_names(self) -> list[str]:
        """Classes of the ``cell_type`` head (``heads["cell_type"]``; [] without one): read-only, for old callers."""
        return list(self.heads.get("cell_type", []))

    @property
    def n_cell_types(self) -> int:
        """Number of ``cell_type`` classes (0 without that head): read-only, for old callers."""
        return len(self.cell_type_names)

    @property
    def n_bins(self) -> int:
        return sum(-(-n // self.bin_size) for n in self.chrom_sizes.values())

    def vocab(self) -> BinVocab:
        """The :class:`BinVocab` this config was made for (genome, bin size, chromosome set, decoder)."""
        bins = BinIndex.from_uns({"genome": self.genome, "bin_size": self.bin_size, "chrom_sizes": self.chrom_sizes})
        vocab = BinVocab.from_bins(bins, decoder=self.decoder, region_classes=self.region_classes)
        if len(vocab) != self.vocab_size:
            raise ValueError(f"config vocab_size={self.vocab_size} does not match its genome ({len(vocab)} tokens)")
        return vocab

    # ------------------------------------------------------------ JSON round trip
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["state_class_weights"] = list(self.state_class_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AtacformerConfig:
        """A config from its dict; configs saved before the recipe split (with data/recipe settings such
        as ``mask_fraction``, listed in :data:`RECIPE_FIELDS`) load with those fields dropped, and configs
        with the old cell-type/organ head fields load with them as ``heads`` (:func:`legacy_heads`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = legacy_heads({k: v for k, v in d.items() if k not in RECIPE_FIELDS})
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write JSON to ``path`` (a file, or a directory → ``config.json``) atomically."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> AtacformerConfig:
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad model config: {e}") from None
