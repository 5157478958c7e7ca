"""RNA encoders for CRAFT: raw counts (B, G) over a fixed gene vocabulary → a cell embedding (B, out_dim).

- :class:`MLPEncoder`: library-size normalise + log1p, then an MLP.
- :class:`GeneTokenEncoder`: Geneformer style: genes ranked by normalised expression (each gene scaled by
  its median non-zero expression in the training cells, :func:`gene_scale`), the top ``max_genes``
  expressed genes become tokens after a ``<cls>``; gene-id + rank embeddings, a transformer; ``<cls>`` out.
- :class:`HFRnaEncoder`: a *local* Hugging Face model directory (gene-token model, e.g. Geneformer-like
  BERT) fed the same ranked gene tokens; never downloads (``local_files_only``), no remote code by default.

:class:`GeneVocab` fixes the gene order; :meth:`GeneVocab.align` maps any cells × genes matrix onto it
(missing genes → zero columns, counted and logged; no shared gene → error).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .._atomic import write_json

log = logging.getLogger(__name__)
GENES_FILE = "genes.json"
KINDS = ("mlp", "tokens", "hf")


@dataclass
class RnaEncoderConfig:
    """Architecture of an RNA encoder (``n_genes`` comes from the gene vocabulary)."""

    kind: str = "mlp"  # "mlp" | "tokens" (Geneformer-style) | "hf" (local Hugging Face model)
    d_model: int = 256  # output width (mlp, tokens); hf: the model's hidden size
    n_layers: int = 2  # mlp: hidden layers; tokens: transformer blocks
    n_heads: int = 4
    d_ff: int = 512  # mlp hidden width / transformer feed-forward width
    dropout: float = 0.1
    max_genes: int = 256  # tokens, hf: top expressed genes per cell
    scale_factor: float = 1e4  # library-size normalisation target
    model_dir: str | None = None  # hf: local model directory
    pooling: str = "cls"  # hf: "cls" | "mean" over the last hidden states
    trust_remote_code: bool = False  # hf: run modelling code shipped in model_dir

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"RNA encoder kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "hf" and not self.model_dir:
            raise ValueError("kind='hf' needs model_dir (a local Hugging Face model directory)")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.kind == "tokens" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.max_genes < 1 or self.n_layers < 1:
            raise ValueError("max_genes and n_layers must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------- genes
class GeneVocab:
    """An ordered list of unique gene names (the columns every RNA input is aligned to)."""

    def __init__(self, genes: Sequence[str]):
        self.genes = [str(g) for g in genes]
        if not self.genes:
            raise ValueError("a gene vocabulary needs at least one gene")
        self.index = {g: i for i, g in enumerate(self.genes)}
        if len(self.index) != len(self.genes):
            dup = sorted({g for g in self.genes if self.genes.count(g) > 1})[:5]
            raise ValueError(f"gene names must be unique; duplicated: {dup}")

    def __len__(self) -> int:
        return len(self.genes)

    def __eq__(self, other) -> bool:
        return isinstance(other, GeneVocab) and self.genes == other.genes

    def align(self, X, var_names: Sequence[str], *, what: str = "RNA data") -> tuple[sp.csr_matrix, dict]:
        """``X`` (cells × ``var_names``) → cells × this vocabulary (float32 CSR) and a report
        ``{n_genes, n_shared, n_missing, missing}``. Missing genes are zero columns (logged)."""
        names = np.asarray(var_names, dtype=str)
        if X.shape[1] != len(names):
            raise ValueError(f"{what}: matrix has {X.shape[1]} columns but {len(names)} gene names")
        src = np.array([j for j, n in enumerate(names) if n in self.index], dtype=np.int64)
        if src.size == 0:
            raise ValueError(f"{what}: none of its {len(names)} genes is in the model's {len(self)} genes "
                             f"(model: {self.genes[:3]}…, data: {list(names[:3])}…); same species and "
                             "gene naming (symbols vs Ensembl IDs)?")
        dst = np.array([self.index[n] for n in names[src]], dtype=np.int64)
        if np.unique(dst).size != dst.size:
            raise ValueError(f"{what}: duplicated gene names among the model's genes; make var_names unique")
        check_counts(X, what=what)
        select = sp.csr_matrix((np.ones(src.size, np.float32), (src, dst)), shape=(len(names), len(self)))
        out = (sp.csr_matrix(X, dtype=np.float32) @ select).tocsr()
        missing = [g for g in self.genes if g not in set(names[src])]
        if missing:
            log.warning("%s: %d of the model's %d genes are missing and set to 0 (e.g. %s)", what, len(missing),
                        len(self), ", ".join(missing[:5]))
        return out, {"n_genes": len(self), "n_shared": int(src.size), "n_missing": len(missing),
                     "missing": missing[:50]}

    def save(self, directory: str | os.PathLike) -> Path:
        return write_json(Path(directory) / GENES_FILE, self.genes)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GeneVocab:
        path = Path(directory) / GENES_FILE
        try:
            genes = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{directory}: no {GENES_FILE} (the gene list of a CRAFT model)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(genes, list):
            raise ValueError(f"{path}: expected a JSON list of gene names")  # noqa: TRY004 (bad file)
        return cls(genes)


def check_counts(X, *, what: str = "RNA data") -> None:
    """Raise on negative values; warn when values are not integers (raw UMI counts are expected)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return
    if data.min() < 0:
        raise ValueError(f"{what}: RNA counts must be non-negative, found {data.min()}")
    frac = data != np.round(data)
    if frac.any():
        hint = " and look log-normalised" if data.max() < 30 else ""
        log.warning("%s: %d values are not integers%s; the RNA encoders normalise raw counts themselves, "
                    "so pass raw counts (e.g. adata.layers['counts'])", what, int(frac.sum()), hint)


def log_normalize(counts: torch.Tensor, scale_factor: float = 1e4) -> torch.Tensor:
    """(B, G) raw counts → log1p(counts / library size · scale_factor) (empty cells stay 0)."""
    lib = counts.sum(-1, keepdim=True).clamp_min(1e-8)  # (B, 1)
    return torch.log1p(counts / lib * scale_factor)


def gene_scale(X, *, scale_factor: float = 1e4) -> np.ndarray:
    """Per-gene median of the non-zero normalised expression over cells (Geneformer's gene normalisation
    factors); genes never expressed get 1. ``X``: cells × genes counts (aligned to the vocabulary)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    lib = np.asarray(X.sum(1)).ravel()
    norm = sp.diags(np.divide(scale_factor, lib, out=np.zeros_like(lib), where=lib > 0)) @ X
    norm = norm.tocsc()
    out = np.ones(X.shape[1], dtype=np.float32)
    for j in range(X.shape[1]):
        col = norm.data[norm.indptr[j]:norm.indptr[j + 1]]
        col = col[col > 0]
        if col.size:
            out[j] = np.median(col)
    return out


def ranked_genes(counts: torch.Tensor, scale: torch.Tensor, n: int, scale_factor: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``n`` genes per cell by normalised expression / ``scale``: (B, n) gene indices, (B, n) bool valid
    (False where the cell expresses fewer than ``n`` genes)."""
    lib = counts.sum(-1, keepdim=True).clamp_min(1e-8)  # (B, 1)
    score = counts / lib * scale_factor / scale  # (B, G)
    score = torch.where(counts > 0, score, torch.full_like(score, -1.0))
    value, idx = score.topk(min(n, counts.shape[-1]), dim=-1)  # (B, n)
    return idx, value > 0


# ---------------------------------------------------------------------------------------- encoders
class MLPEncoder(nn.Module):
    """log-normalised counts (B, G) → [Linear → LayerNorm → GELU → dropout] × n_layers → Linear → (B, d)."""

    def __init__(self, config: RnaEncoderConfig, n_genes: int):
        super().__init__()
        self.config, self.out_dim = config, config.d_model
        layers, width = [], n_genes
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.d_ff), nn.LayerNorm(config.d_ff), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.d_ff
        self.net = nn.Sequential(*layers, nn.Linear(width, config.d_model))

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return self.net(log_normalize(counts.float(), self.config.scale_factor))  # (B, d)


class GeneTokenEncoder(nn.Module):
    """Geneformer-style: ``<cls>`` + the cell's top ``max_genes`` genes by rank; token + rank embedding,
    pre-norm transformer, final LayerNorm; output the ``<cls>`` state (B, d)."""

    PAD, CLS = 0, 1  # gene g is token g + 2

    def __init__(self, config: RnaEncoderConfig, n_genes: int):
        super().__init__()
        self.config, self.out_dim = config, config.d_model
        self.token = nn.Embedding(n_genes + 2, config.d_model, padding_idx=self.PAD)
        self.rank = nn.Embedding(config.max_genes + 1, config.d_model)  # position 0 is <cls>
        layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.register_buffer("gene_scale", torch.ones(n_genes))  # (G,) set by set_gene_scale

    def set_gene_scale(self, scale) -> None:
        """Per-gene normalisation factors (see :func:`gene_scale`), saved with the weights."""
        self.gene_scale.copy_(torch.as_tensor(np.asarray(scale), dtype=torch.float32))

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        idx, valid = ranked_genes(counts.float(), self.gene_scale, self.config.max_genes, self.config.scale_factor)
        b = counts.shape[0]
        ids = torch.where(valid, idx + 2, torch.full_like(idx, self.PAD))  # (B, n)
        ids = torch.cat([torch.full((b, 1), self.CLS, dtype=ids.dtype, device=ids.device), ids], 1)  # (B, n+1)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ids.device), valid], 1)  # (B, n+1)
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.token(ids) + self.rank(pos)[None]  # (B, n+1, d)
        h = self.blocks(h, src_key_padding_mask=~keep)
        return self.norm(h[:, 0])  # (B, d)


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def hf_gene_tokens(model_dir: Path) -> tuple[dict[str, int], int, int]:
    """(gene → token id, cls id, pad id) of a local gene-token model: from its tokenizer when one loads,
    else from ``token_dictionary.json`` (``{gene: id}`` with ``<cls>`` and ``<pad>`` entries)."""
    path = model_dir / "token_dictionary.json"
    if path.is_file():
        try:
            vocab = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a JSON {{gene: token id}} dictionary ({e})") from None
        missing = [t for t in ("<cls>", "<pad>") if t not in vocab]
        if missing:
            raise ValueError(f"{path}: needs {missing} entries")
        return vocab, vocab["<cls>"], vocab["<pad>"]
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"{model_dir}: no tokenizer and no token_dictionary.json to map genes to tokens ({e})") \
            from None
    if tok.cls_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no <cls> token")
    return tok.get_vocab(), int(tok.cls_token_id), int(tok.pad_token_id or 0)


class HFRnaEncoder(nn.Module):
    """A local Hugging Face gene-token model as an RNA encoder: ``<cls>`` + the top ``max_genes`` genes by
    normalised expression (model genes only) → the model → ``<cls>`` (or mean) of the last hidden states."""

    def __init__(self, config: RnaEncoderConfig, genes: Sequence[str]):
        super().__init__()
        _offline()
        from transformers import AutoModel

        self.config = config
        model_dir = Path(config.model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a local model directory (no config.json); atacformer "
                                    "never downloads weights, so point it at a saved Hugging Face model")
        self.backbone = AutoModel.from_pretrained(model_dir, local_files_only=True,
                                                  trust_remote_code=config.trust_remote_code)
        vocab, self.cls_id, self.pad_id = hf_gene_tokens(model_dir)
        token = torch.tensor([vocab.get(g, -1) for g in genes], dtype=torch.long)  # (G,)
        n_unmapped = int((token < 0).sum())
        if n_unmapped == len(genes):
            raise ValueError(f"{model_dir}: none of the {len(genes)} genes is in the model's vocabulary")
        if n_unmapped:
            log.warning("%s: %d of %d genes are not in the model's vocabulary and are ignored", model_dir,
                        n_unmapped, len(genes))
        self.register_buffer("gene_token", token)
        self.register_buffer("gene_scale", torch.ones(len(genes)))
        self.out_dim = int(self.backbone.config.hidden_size)

    set_gene_scale = GeneTokenEncoder.set_gene_scale

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        counts = counts.float() * (self.gene_token >= 0)  # unmapped genes never become tokens
        idx, valid = ranked_genes(counts, self.gene_scale, self.config.max_genes, self.config.scale_factor)
        b = counts.shape[0]
        ids = torch.where(valid, self.gene_token[idx], torch.full_like(idx, self.pad_id))  # (B, n)
        ids = torch.cat([torch.full((b, 1), self.cls_id, dtype=ids.dtype, device=ids.device), ids], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.long, device=ids.device), valid.long()], 1)  # (B, n+1)
        h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, n+1, H)
        if self.config.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)  # (B, H)

    def save_backbone(self, directory: str | os.PathLike) -> Path:
        """The (fine-tuned) backbone and its gene-token vocabulary, loadable as ``model_dir``."""
        directory = Path(directory)
        self.backbone.save_pretrained(directory)
        src = Path(self.config.model_dir)
        if (src / "token_dictionary.json").is_file():
            (directory / "token_dictionary.json").write_bytes((src / "token_dictionary.json").read_bytes())
        else:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(directory)
        return directory


def build_rna_encoder(config: RnaEncoderConfig, genes: Sequence[str]) -> nn.Module:
    """The encoder ``config.kind`` names, over ``genes`` (its ``out_dim`` is the embedding width)."""
    if config.kind == "mlp":
        return MLPEncoder(config, len(genes))
    if config.kind == "tokens":
        return GeneTokenEncoder(config, len(genes))
    return HFRnaEncoder(config, genes)
