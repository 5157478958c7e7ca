"""The bin vocabulary: V = B + 2 + C tokens (bins, ``<pad>``, ``<cls>`` and one ``<eos_c>`` per chromosome).

Token layout (ids)::

    0            <pad>
    1            <cls>
    2 .. 2+C-1   <eos_1> .. <eos_C>      (one per modelled chromosome, in genome order)
    2+C ..       bin 0 .. bin B-1        (global bin ids of :class:`atacformer.genome.BinIndex`)

For human (23 chromosomes) that is B + 25 tokens, as in the design.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._atomic import write_json
from ..genome import DEFAULT_BIN_SIZE, BinIndex, Genome, get_genome

PAD_ID = 0
CLS_ID = 1
VOCAB_FILE = "vocab.json"


class BinVocab:
    """Maps global bin ids ↔ token ids and knows the special tokens of a genome's chromosome set."""

    def __init__(self, genome: str | Genome = "hg38", bin_size: int = DEFAULT_BIN_SIZE):
        self.bins: BinIndex = get_genome(genome).bins(bin_size)
        self.genome = self.bins.genome
        self.bin_size = self.bins.bin_size
        self.n_chroms = self.genome.n_chroms
        self.pad_id = PAD_ID
        self.cls_id = CLS_ID
        self.eos_offset = 2
        self.n_special = 2 + self.n_chroms
        self.bin_offset = self.n_special

    @classmethod
    def from_bins(cls, bins: BinIndex) -> BinVocab:
        return cls(bins.genome, bins.bin_size)

    def __len__(self) -> int:
        return self.n_special + self.bins.n_bins

    def __repr__(self) -> str:
        return f"BinVocab(genome={self.genome.name!r}, bin_size={self.bin_size}, size={len(self)})"

    @property
    def n_bins(self) -> int:
        return self.bins.n_bins

    def eos_id(self, chrom_idx) -> np.ndarray | int:
        """Token id of ``<eos_c>`` for chromosome index ``c`` (0-based)."""
        return self.eos_offset + chrom_idx

    @property
    def eos_ids(self) -> np.ndarray:
        return np.arange(self.eos_offset, self.eos_offset + self.n_chroms, dtype=np.int64)

    def bin_to_token(self, bin_ids) -> np.ndarray:
        return np.asarray(bin_ids, dtype=np.int64) + self.bin_offset

    def token_to_bin(self, token_ids) -> np.ndarray:
        """Global bin id of each token; -1 for special tokens."""
        t = np.asarray(token_ids, dtype=np.int64)
        return np.where(t >= self.bin_offset, t - self.bin_offset, -1)

    def is_special(self, token_ids) -> np.ndarray:
        return np.asarray(token_ids) < self.bin_offset

    def token_names(self) -> list[str]:
        names = ["<pad>", "<cls>"] + [f"<eos_{c}>" for c in self.genome.chroms]
        return names + list(self.bins.names())

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {
            "genome": self.genome.name,
            "bin_size": self.bin_size,
            "chrom_sizes": dict(self.genome.chrom_sizes),
            "n_bins": self.n_bins,
            "vocab_size": len(self),
            "layout": {"pad": PAD_ID, "cls": CLS_ID, "eos_offset": self.eos_offset, "bin_offset": self.bin_offset},
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.json`` (genome, bin size, chrom sizes, layout) into ``directory`` atomically."""
        return write_json(Path(directory) / VOCAB_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, genome: str | None = None, bin_size: int | None = None) -> BinVocab:
        """Load from a ``vocab.json`` file or a directory holding one. If ``genome``/``bin_size`` are
        given they must match the saved ones (a model for hg38/5 kb cannot read hg19 or 1 kb data)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            meta = json.loads(path.read_text())
            missing = [k for k in ("genome", "bin_size", "vocab_size") if k not in meta]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ValueError(f"{path}: corrupt vocabulary file (not valid JSON: {err})") from None
        if missing:
            raise ValueError(f"{path}: corrupt vocabulary file (no {', '.join(missing)})")
        if genome is not None and str(genome) != meta["genome"]:
            raise ValueError(f"{path}: vocabulary is for genome {meta['genome']!r}, not {genome!r}")
        if bin_size is not None and int(bin_size) != int(meta["bin_size"]):
            raise ValueError(f"{path}: vocabulary has {meta['bin_size']} bp bins, not {bin_size} bp")
        try:
            bins = BinIndex.from_uns(meta)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: corrupt vocabulary file ({err})") from None
        vocab = cls.from_bins(bins)
        if len(vocab) != meta["vocab_size"]:
            raise ValueError(f"{path}: vocabulary size {meta['vocab_size']} does not match its genome ({len(vocab)})")
        return vocab

    def check_data(self, uns, *, what: str = "data") -> None:
        """Raise if an AnnData's ``uns`` (genome, bin size) differs from this vocabulary's."""
        if "genome" not in uns or "bin_size" not in uns:
            raise ValueError(f"{what} has no uns['genome']/uns['bin_size']; ingest it with atacformer first")
        self.bins.check_compatible(uns["genome"], uns["bin_size"], what=what)
