"""Token embedding (factorized bin id + projected DNA) and the pre-norm transformer encoder.

Positions: none are added. A cell sentence is a *set* of open bins written in the canonical genomic
order, so a token's index in the sentence carries no information beyond its identity, and the bin
identity already is its genomic position (E1 learns it; the DNA embedding adds the sequence). Without
position ids the encoder is permutation-equivariant within a cell, packing needs no position
bookkeeping, and subsampled or masked sentences look like any other cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenize.vocab import PAD_ID
from .attention import AttentionContext, attend, from_slots, to_slots
from .config import AtacformerConfig


class TokenEmbedding(nn.Module):
    """E2(E1[token]) + W_dna · dna[token]: E1 (V × k), E2 (k × d), dna a frozen (V × dna_dim) table."""

    def __init__(self, config: AtacformerConfig, dna_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.e1 = nn.Embedding(config.vocab_size, config.k)  # (V, k), shared with the decoder
        self.e2 = nn.Linear(config.k, config.d_model, bias=False)
        self.dna_proj = nn.Linear(config.dna_dim, config.d_model) if config.dna_dim else None
        if config.dna_dim:
            table = torch.zeros(config.vocab_size, config.dna_dim)
            if dna_embeddings is not None:
                table = _check_dna_table(dna_embeddings, config)
            self.register_buffer("dna", table)  # saved with the model: a model dir is self-contained
        elif dna_embeddings is not None:
            raise ValueError("dna_embeddings given but config.dna_dim is 0; set dna_dim to the table width")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.e2(self.e1(ids))  # (..., d)
        if self.dna_proj is not None:
            x = x + self.dna_proj(self.dna[ids].to(x.dtype))
        return x


def _check_dna_table(table, config: AtacformerConfig) -> torch.Tensor:
    """The (vocab_size, dna_dim) table; one aligned to the chromosome-decoder vocabulary of the same bins
    (no decoder tokens after the bins: bin token ids are the same) gets zero rows for those tokens."""
    table = torch.as_tensor(table, dtype=torch.float32).clone()
    n_body = 2 + config.n_chroms + config.n_bins  # <pad>, <cls>, chromosome <eos>, bins
    if table.ndim == 2 and table.shape[0] == n_body < config.vocab_size:
        table = torch.cat([table, table.new_zeros(config.vocab_size - n_body, table.shape[1])])
    if table.shape != (config.vocab_size, config.dna_dim):
        raise ValueError(
            f"DNA embedding table has shape {tuple(table.shape)}, expected (vocab_size={config.vocab_size}, "
            f"dna_dim={config.dna_dim}); align it to the vocabulary with DNAEmbeddingTable.aligned(vocab)"
        )
    table[: 2 + config.n_chroms] = 0.0  # special tokens have no sequence
    table[n_body:] = 0.0
    return table


class SelfAttention(nn.Module):
    def __init__(self, config: AtacformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        if ctx.packed:  # x: (T, d)
            q, k, v = self.qkv(x).unflatten(-1, (3, self.n_heads, -1)).unbind(1)  # each (T, H, Dh)
            y = attend(q, k, v, ctx, dropout_p=p).flatten(1)  # (T, d)
        else:  # x: (B, L, d)
            q, k, v = self.qkv(x).unflatten(-1, (3, self.n_heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
            y = attend(q, k, v, ctx, dropout_p=p).transpose(1, 2).flatten(2)  # (B, L, d)
        return self.proj(y)


class EncoderLayer(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, config: AtacformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.ff1 = nn.Linear(config.d_model, config.d_ff)
        self.ff2 = nn.Linear(config.d_ff, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), ctx))
        return x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))


class Encoder(nn.Module):
    def __init__(self, config: AtacformerConfig, dna_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.embed = TokenEmbedding(config, dna_embeddings)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)

    def forward(self, ids: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """ids (T,) packed or (B, L) padded → hidden states (T, d) or (B, L, d).

        Packed with ``buckets`` attention, the layers run on the slot layout (S ≥ T, see
        :mod:`.attention`), entered once here and left once before the final norm."""
        if ctx.packed:
            ids = to_slots(ids, ctx, PAD_ID)  # (S,)
        x = self.drop(self.embed(ids))
        for layer in self.layers:
            x = layer(x, ctx)
        if ctx.packed:
            x = from_slots(x, ctx)  # (T, d)
        return self.ln_f(x)
