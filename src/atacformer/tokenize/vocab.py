"""The bin vocabulary: bins, ``<pad>``, ``<cls>`` and the ``<eos>`` tokens of the model's decoder.

Token layout (ids)::

    0                    <pad>
    1                    <cls>
    2 .. 2+C-1           <eos_1> .. <eos_C>      (one per modelled chromosome, in genome order)
    2+C .. 2+C+B-1       bin 0 .. bin B-1        (global bin ids of :class:`atacformer.genome.BinIndex`)
    2+C+B ..             decoder tokens          (``region-class``: one <eos_k> per region class;
                                                  ``class-x-chromosome``: one per chromosome × class)

For human (23 chromosomes) and the per-chromosome decoder that is B + 25 tokens, as in the design.
The decoder tokens come *after* the bins so that a bin has the same token id whatever the decoder
(corpora, DNA tables and region embeddings do not depend on it); the chromosome ``<eos>`` ids stay
reserved (unused by the other decoders).

``decoder`` names the ``<eos>`` tokens a sentence holds (see :mod:`.sentences`): ``chromosome`` (C),
``region-class`` (K = ``len(region_classes)``), ``class-x-chromosome`` (C × K, region ``c·K + k``) or
``cross-attention`` (none: the decoder's queries are not tokens; one per class when ``region_classes``
is given, else one per chromosome). The *regions* of a vocabulary are what its ``<eos>`` tokens (or
queries) stand for; :meth:`BinVocab.bin_regions` maps every bin to its region.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._atomic import write_json
from ..genome import DEFAULT_BIN_SIZE, BinIndex, Genome, get_genome

PAD_ID = 0
CLS_ID = 1
VOCAB_FILE = "vocab.json"
DECODERS = ("chromosome", "region-class", "class-x-chromosome", "cross-attention")
CLASS_DECODERS = ("region-class", "class-x-chromosome")  # need region classes


class BinVocab:
    """Maps global bin ids ↔ token ids and knows the special tokens of a genome's chromosome set and
    of the decoder (``decoder``, ``region_classes``: module docstring)."""

    def __init__(self, genome: str | Genome = "hg38", bin_size: int = DEFAULT_BIN_SIZE, *,
                 decoder: str = "chromosome", region_classes: Sequence[str] = ()):
        self.bins: BinIndex = get_genome(genome).bins(bin_size)
        self.genome = self.bins.genome
        self.bin_size = self.bins.bin_size
        self.n_chroms = self.genome.n_chroms
        self.decoder, self.region_classes = decoder, [str(c) for c in region_classes]
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        if decoder in CLASS_DECODERS and not self.region_classes:
            raise ValueError(f"the {decoder} decoder needs region classes (region_classes=[...])")
        if decoder == "chromosome" and self.region_classes:
            raise ValueError("the chromosome decoder takes no region classes")
        if len(set(self.region_classes)) != len(self.region_classes):
            raise ValueError(f"region classes must be distinct, got {self.region_classes}")
        self.pad_id = PAD_ID
        self.cls_id = CLS_ID
        self.eos_offset = 2
        self.n_special = 2 + self.n_chroms
        self.bin_offset = self.n_special

    @classmethod
    def from_bins(cls, bins: BinIndex, **decoder) -> BinVocab:
        return cls(bins.genome, bins.bin_size, **decoder)

    def with_decoder(self, decoder: str = "chromosome", region_classes: Sequence[str] = ()) -> BinVocab:
        """The vocabulary of the same bins for another decoder."""
        return type(self)(self.genome, self.bin_size, decoder=decoder, region_classes=region_classes)

    def __len__(self) -> int:
        return self.n_special + self.bins.n_bins + self.n_extra

    def __repr__(self) -> str:
        extra = ("" if self.decoder == "chromosome"
                 else f", decoder={self.decoder!r}, classes={len(self.region_classes)}")
        return f"BinVocab(genome={self.genome.name!r}, bin_size={self.bin_size}, size={len(self)}{extra})"

    @property
    def n_bins(self) -> int:
        return self.bins.n_bins

    @property
    def n_regions(self) -> int:
        """Regions of the decoder: one ``<eos>`` token (or cross-attention query) each."""
        k = len(self.region_classes)
        if self.decoder == "class-x-chromosome":
            return self.n_chroms * k
        return k if self.decoder in ("region-class", "cross-attention") and k else self.n_chroms

    @property
    def n_eos(self) -> int:
        """``<eos>`` tokens in every sentence (0 for the cross-attention decoder)."""
        return 0 if self.decoder == "cross-attention" else self.n_regions

    @property
    def n_extra(self) -> int:
        """Decoder tokens after the bins (the class decoders' ``<eos>``)."""
        return self.n_regions if self.decoder in CLASS_DECODERS else 0

    def eos_id(self, chrom_idx) -> np.ndarray | int:
        """Token id of ``<eos_c>`` for chromosome index ``c`` (0-based)."""
        return self.eos_offset + chrom_idx

    @property
    def eos_ids(self) -> np.ndarray:
        """The ``<eos>`` token ids of a sentence, region by region (``n_eos``,)."""
        if self.decoder == "chromosome":
            return np.arange(self.eos_offset, self.eos_offset + self.n_chroms, dtype=np.int64)
        start = self.bin_offset + self.n_bins
        return np.arange(start, start + self.n_eos, dtype=np.int64)

    def bin_regions(self, class_codes: np.ndarray | None = None) -> np.ndarray:
        """(n_bins,) region of every bin: its chromosome, its class code (0..K-1, per bin of the genome;
        needed when the vocabulary has region classes) or ``chromosome · K + class``."""
        chrom = np.repeat(np.arange(self.n_chroms), self.bins.n_bins_per_chrom).astype(np.int64)
        if not self.region_classes:
            return chrom
        if class_codes is None:
            raise ValueError(f"the {self.decoder} decoder needs the region class of every bin")
        codes = np.asarray(class_codes, dtype=np.int64)
        k = len(self.region_classes)
        if codes.shape != (self.n_bins,) or (len(codes) and (codes.min() < 0 or codes.max() >= k)):
            raise ValueError(f"region class codes must be ({self.n_bins},) integers in [0, {k}), got shape "
                             f"{codes.shape}" + (f", range {codes.min()}..{codes.max()}" if codes.size else ""))
        return chrom * k + codes if self.decoder == "class-x-chromosome" else codes

    def check_region_classes(self, classes: Sequence[str], *, what: str = "data") -> None:
        """Raise ``ValueError`` if ``classes`` (e.g. the categories of ``var['region_class']``) is not
        this vocabulary's class set."""
        if set(map(str, classes)) != set(self.region_classes):
            raise ValueError(f"{what} has region classes {sorted(map(str, classes))}, but the model's vocabulary "
                             f"({self.decoder} decoder) has {sorted(self.region_classes) or 'none'}")

    def bin_to_token(self, bin_ids) -> np.ndarray:
        return np.asarray(bin_ids, dtype=np.int64) + self.bin_offset

    def token_to_bin(self, token_ids) -> np.ndarray:
        """Global bin id of each token; -1 for special tokens."""
        t = np.asarray(token_ids, dtype=np.int64)
        return np.where((t >= self.bin_offset) & (t < self.bin_offset + self.n_bins), t - self.bin_offset, -1)

    def is_special(self, token_ids) -> np.ndarray:
        t = np.asarray(token_ids)
        return (t < self.bin_offset) | (t >= self.bin_offset + self.n_bins)

    def token_names(self) -> list[str]:
        names = ["<pad>", "<cls>"] + [f"<eos_{c}>" for c in self.genome.chroms] + list(self.bins.names())
        if self.decoder == "region-class":
            names += [f"<eos_{k}>" for k in self.region_classes]
        elif self.decoder == "class-x-chromosome":
            names += [f"<eos_{c}:{k}>" for c in self.genome.chroms for k in self.region_classes]
        return names

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {
            "genome": self.genome.name,
            "bin_size": self.bin_size,
            "chrom_sizes": dict(self.genome.chrom_sizes),
            "n_bins": self.n_bins,
            "vocab_size": len(self),
            "decoder": self.decoder,
            "region_classes": list(self.region_classes),
            "layout": {"pad": PAD_ID, "cls": CLS_ID, "eos_offset": self.eos_offset, "bin_offset": self.bin_offset,
                       "decoder_offset": self.bin_offset + self.n_bins},
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.json`` (genome, bin size, chrom sizes, decoder, classes, layout) into ``directory``."""
        return write_json(Path(directory) / VOCAB_FILE, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, genome: str | None = None, bin_size: int | None = None,
             decoder: str | None = None, region_classes: Sequence[str] | None = None) -> BinVocab:
        """Load from a ``vocab.json`` file or a directory holding one. If ``genome``/``bin_size`` (or
        ``decoder``/``region_classes``) are given they must match the saved ones (a model for hg38/5 kb
        cannot read hg19 or 1 kb data, nor a vocabulary of another class set). Files written before the
        decoder choice are ``chromosome`` vocabularies."""
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
        saved = {"decoder": meta.get("decoder", "chromosome"), "region_classes": list(meta.get("region_classes", []))}
        if decoder is not None and (decoder != saved["decoder"]
                                    or list(region_classes or []) != saved["region_classes"]):
            raise ValueError(f"{path}: vocabulary is for the {saved['decoder']} decoder with region classes "
                             f"{saved['region_classes'] or 'none'}, not the {decoder} decoder with "
                             f"{list(region_classes or []) or 'none'}")
        try:
            bins = BinIndex.from_uns(meta)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: corrupt vocabulary file ({err})") from None
        vocab = cls.from_bins(bins, **saved)
        if len(vocab) != meta["vocab_size"]:
            raise ValueError(f"{path}: vocabulary size {meta['vocab_size']} does not match its genome ({len(vocab)})")
        return vocab

    def check_data(self, uns, *, what: str = "data") -> None:
        """Raise if an AnnData's ``uns`` (genome, bin size) differs from this vocabulary's."""
        if "genome" not in uns or "bin_size" not in uns:
            raise ValueError(f"{what} has no uns['genome']/uns['bin_size']; ingest it with atacformer first")
        self.bins.check_compatible(uns["genome"], uns["bin_size"], what=what)
