"""EpiAttend configuration and presets.

Resolution arithmetic (fixed by the architecture): the sequence trunk halves the length once in the
stem and once per tower stage, so with ``n_tower = 6`` one output position covers
``2 ** (1 + 6) = 128`` bp. An input of ``seq_len`` bp gives ``seq_len // 128`` positions; the
transformer sees all of them, then ``crop`` positions are removed from each end, leaving
``seq_len // 128 - 2 * crop`` output positions (the flanks only provide context).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .._atomic import write_json

MODES = ("both", "sequence", "epigenome")


@dataclass(frozen=True)
class EpiAttendConfig:
    """Hyper-parameters of :class:`~atacformer.epiattend.model.EpiAttend`."""

    seq_len: int = 16_384  # input DNA length (bp); a multiple of bin_size
    n_tower: int = 6  # conv tower stages (each halves the length); bin_size = 2 ** (1 + n_tower)
    stem_channels: int = 24  # channels after the conv stem
    seq_channels: int = 48  # channels at the end of the conv tower
    stem_kernel: int = 15
    epi_channels: int = 1  # epigenome input channels per cell type (ATAC, mC, ...)
    epi_hidden: int = 16  # width of the epigenome stem
    epi_layers: int = 2  # residual conv blocks in the epigenome stem
    d_model: int = 64  # width after fusion = transformer width
    n_heads: int = 4
    key_size: int = 16
    n_layers: int = 2
    pos_features: int = 16  # relative-position basis functions (multiple of 4)
    crop: int = 32  # positions removed from each end before the heads
    n_targets: int = 1  # output tracks per cell type (expression, ...)
    mode: str = "both"  # "both" | "sequence" | "epigenome" (ablations)
    dropout: float = 0.05
    attn_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.seq_len % self.bin_size:
            raise ValueError(f"seq_len={self.seq_len} is not a multiple of the {self.bin_size} bp resolution")
        if self.n_out <= 0:
            raise ValueError(f"crop={self.crop} leaves no output positions of {self.n_positions}")
        if self.pos_features % 4:
            raise ValueError(f"pos_features must be a multiple of 4, got {self.pos_features}")

    @property
    def bin_size(self) -> int:
        """Base pairs per position after the sequence trunk (128 for the default 6 tower stages)."""
        return 2 ** (1 + self.n_tower)

    @property
    def n_positions(self) -> int:
        """Positions seen by the transformer: ``seq_len // bin_size``."""
        return self.seq_len // self.bin_size

    @property
    def n_out(self) -> int:
        """Output positions after cropping: ``n_positions - 2 * crop``."""
        return self.n_positions - 2 * self.crop

    @property
    def uses_sequence(self) -> bool:
        return self.mode in ("both", "sequence")

    @property
    def uses_epigenome(self) -> bool:
        return self.mode in ("both", "epigenome")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EpiAttendConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EpiAttendConfig fields: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> EpiAttendConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


PRESETS: dict[str, EpiAttendConfig] = {
    # CPU-sized: 16 kb windows (128 positions, 64 predicted), ~190k parameters
    "tiny": EpiAttendConfig(),
    # a laptop GPU: 64 kb windows
    "small": EpiAttendConfig(
        seq_len=65_536, stem_channels=64, seq_channels=192, epi_hidden=64, d_model=256, n_heads=8,
        key_size=32, n_layers=4, pos_features=32, crop=64, dropout=0.2, attn_dropout=0.05,
    ),
    # Enformer-sized trunk: 196,608 bp in, 1536 positions, 896 predicted, 11 attention layers
    "base": EpiAttendConfig(
        seq_len=196_608, stem_channels=768, seq_channels=1536, epi_hidden=256, d_model=1536, n_heads=8,
        key_size=64, n_layers=11, pos_features=192, crop=320, dropout=0.4, attn_dropout=0.05,
    ),
}


def get_config(preset: str = "tiny", **overrides) -> EpiAttendConfig:
    """A preset (``tiny``, ``small``, ``base``) with field overrides, e.g. ``get_config("tiny", mode="sequence")``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown EpiAttend preset {preset!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)
