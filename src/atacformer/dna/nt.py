"""Nucleotide Transformer (NT) embeddings of bin sequences, from a LOCAL model directory only.

NT tokenizes DNA into non-overlapping 6-mers, left to right; a stretch of A/C/G/T shorter than six
(before an N or at the end) and every N become single-nucleotide tokens. NT v2 checkpoints are
ESM-architecture ``transformers`` models. Some checkpoints ship their own modelling code in the model
directory (``auto_map`` in ``config.json``); loading those runs that code, so it is refused unless
``trust_remote_code=True`` (``atacformer dna-embed --trust-remote-code``) says the folder is trusted.
A bin's embedding is the mean of the chosen hidden layer (default: the last) over its non-pad
tokens (``<cls>`` included, as in NT's examples). All-N bins are not run and get zero vectors.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_KMER_OR_BASE = re.compile(r"[ACGT]{6}|.", re.S)
_NOT_ACGT = re.compile(r"[^ACGT]")


def nt_tokens(seq: str) -> list[str]:
    """NT 6-mer tokens of a sequence (upper-cased; anything but A/C/G/T counts as N).

    >>> nt_tokens("ATCGGATNCGGATCCAAT")
    ['ATCGGA', 'T', 'N', 'CGGATC', 'C', 'A', 'A', 'T']
    """
    return _KMER_OR_BASE.findall(_NOT_ACGT.sub("N", seq.upper()))


def _offline() -> None:
    """Never touch the Hugging Face hub from this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def check_remote_code(model_dir: Path, trust_remote_code: bool) -> None:
    """Refuse a model directory whose ``config.json`` names its own Python code (``auto_map``) unless
    ``trust_remote_code``: loading such a model executes that code."""
    config = model_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{model_dir}: not a local model directory (no config.json); atacformer "
                                "never downloads weights, so point --model at a saved NT checkpoint")
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{config}: not a valid model config ({err})") from None
    if auto_map and not trust_remote_code:
        code = sorted({str(v).split(".")[0] for v in auto_map.values() if isinstance(v, str)})
        raise ValueError(f"{model_dir}: this model ships its own Python code ({', '.join(code) or 'auto_map'}), "
                         "which loading it would run; pass --trust-remote-code (trust_remote_code=True) only if "
                         "you trust where the folder came from")


class NTEmbedder:
    """Mean-pooled hidden states of an NT model loaded from a local directory, batched, on GPU when
    present (bfloat16 autocast on CUDA). ``trust_remote_code`` (default False) allows model folders that
    ship their own modelling code; see :func:`check_remote_code`."""

    method = "nt"

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 16, layer: int = -1,
                 trust_remote_code: bool = False):
        _offline()
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        check_remote_code(self.model_dir, trust_remote_code)
        trust = bool(trust_remote_code)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=trust)
        model = AutoModelForMaskedLM.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=trust)
        self.encoder = getattr(model, model.base_model_prefix, model).eval()  # no LM head: hidden states only
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder.to(self.device)
        self.batch_size = int(batch_size)
        self.layer = int(layer)
        self.dim = int(model.config.hidden_size)
        self.max_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self._vocab = self.tokenizer.get_vocab()
        self._unk = self.tokenizer.unk_token_id
        self._cls = self.tokenizer.cls_token_id
        self._eos = self.tokenizer.eos_token_id
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def metadata(self) -> dict:
        return {"source_model": self.model_dir.resolve().name,
                "layer": "last" if self.layer == -1 else str(self.layer),
                "pooling": "mean over non-pad tokens (incl. <cls>)"}

    def token_ids(self, seq: str) -> list[int]:
        """``<cls>`` + 6-mer token ids (+ ``<eos>`` if the tokenizer defines one), like the NT tokenizer.

        Each N is a token, so a bin at the edge of an assembly gap can exceed the model's length: then
        its N tokens (no sequence information) are dropped, and what is still too long is truncated."""
        tokens = nt_tokens(seq)
        n_special = 1 + (self._eos is not None)
        if self.max_tokens and len(tokens) + n_special > self.max_tokens:
            tokens = [t for t in tokens if t != "N"][: self.max_tokens - n_special]
        ids = [self._vocab.get(t, self._unk) for t in tokens]
        return [self._cls, *ids] + ([self._eos] if self._eos is not None else [])

    def check_bin_size(self, bin_size: int) -> None:
        """Raise if an N-free bin of ``bin_size`` bp needs more tokens than the model's maximum."""
        n = bin_size // 6 + bin_size % 6 + 1 + (self._eos is not None)
        if self.max_tokens and n > self.max_tokens:
            raise ValueError(f"{self.model_dir}: a {bin_size} bp bin is {n} tokens, more than the model's "
                             f"{self.max_tokens}; use a smaller --bin-size")

    def _batch(self, seqs: Sequence[str]) -> np.ndarray:
        import torch

        ids = [self.token_ids(s) for s in seqs]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad, dtype=torch.long)  # (B, T)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
        mask = (torch.arange(width)[None, :] < torch.tensor([len(x) for x in ids])[:, None]).long()  # (B, T)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        use_amp = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            h = out.hidden_states[self.layer].float()  # (B, T, D)
        m = mask.unsqueeze(-1).float()  # (B, T, 1)
        return ((h * m).sum(1) / m.sum(1)).cpu().numpy()  # (B, D)

    def __call__(self, seqs: Sequence[str] | str) -> np.ndarray:
        """Embeddings (n, hidden) float32 of sequences; all-N (or empty) sequences → zero rows."""
        if isinstance(seqs, str):
            seqs = [seqs]
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        todo = [i for i, s in enumerate(seqs) if _NOT_ACGT.sub("", s.upper())]
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            out[idx] = self._batch([seqs[i] for i in idx])
        return out

    def embed_region(self, seq: str, bin_size: int) -> np.ndarray:
        """Embeddings (n_bins, hidden) of consecutive bins cut from one contiguous sequence."""
        self.check_bin_size(bin_size)
        return self([seq[s : s + bin_size] for s in range(0, len(seq), bin_size)])


def nt_embed(seqs: Sequence[str] | str, *, model: str | Path, batch_size: int = 16, device: str | None = None,
             layer: int = -1, trust_remote_code: bool = False) -> np.ndarray:
    """NT embeddings (n, hidden) float32 of DNA sequences with the model saved in directory ``model``."""
    return NTEmbedder(model, device=device, batch_size=batch_size, layer=layer,
                      trust_remote_code=trust_remote_code)(seqs)
