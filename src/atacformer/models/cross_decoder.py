"""The cross-attention decoder: learned region queries read each cell's encoder outputs, then the
3-state decoder predicts the bins of each region from its query's output.

For K regions (chromosomes, or region classes of :mod:`atacformer.pp.region_classes`) the decoder
holds K learned query vectors that are *not* tokens of the sentence. For cell b,

    Output[b, k] = x + FFN(LN(x)),   x = q_k + Attention(LN(q_k), H_b, H_b)

where H_b are the encoder outputs of cell b's own tokens only (a block mask over the packed stream) and
the queries never attend to each other (each is one independent attention row). Output (B, K, d) then
takes the place of the ``<eos_k>`` outputs in :class:`~.decoder.StateDecoder`, which this module
composes: ``compress(Output[b, k])`` with ``E1[bin]`` for the bins of region k, the split first layer,
chunked and checkpointed bins (memory O(B × chunk × hidden), independent of the bin count) and the
unbiased closed-bin sampling, unchanged.

Attention runs as one SDPA call on the cells' keys and values padded to the longest cell (B × L_max
× d, the order of the encoder's own activations; the scores are B × heads × K × L_max, small as K is).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AtacformerConfig
from .decoder import DecoderOutput, StateDecoder


class RegionQueries(nn.Module):
    """K learned queries, each attending over one cell's encoder outputs: (T, d) packed → (B, K, d)."""

    def __init__(self, config: AtacformerConfig, n_regions: int):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.queries = nn.Parameter(torch.randn(n_regions, d) * 0.02)  # (K, d)
        self.ln_q = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.ln_ff = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, config.d_ff)
        self.ff2 = nn.Linear(config.d_ff, d)
        self.dropout = config.dropout

    @property
    def n_regions(self) -> int:
        return int(self.queries.shape[0])

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        """h (T, d) encoder outputs of a packed stream; cu_seqlens (B+1,) boundaries of the B cells whose
        outputs are wanted (the stream may hold more, e.g. second views, after them) → (B, K, d)."""
        cu = cu_seqlens.to(h.device, torch.long)
        lengths = cu[1:] - cu[:-1]  # (B,)
        if bool((lengths < 1).any()):
            raise ValueError("every cell needs at least one token for the region queries to attend to")
        n_cells, width, n_tok = len(lengths), int(lengths.max()), int(cu[-1])
        cell = torch.repeat_interleave(torch.arange(n_cells, device=h.device), lengths)  # (T,)
        pos = torch.arange(n_tok, device=h.device) - cu[cell]  # (T,) position within its cell
        kv = h.new_zeros(n_cells, width, 2 * h.shape[-1]).index_put((cell, pos), self.kv(h[:n_tok]))  # (B, L, 2d)
        k, v = kv.unflatten(-1, (2, self.n_heads, -1)).permute(2, 0, 3, 1, 4)  # each (B, nh, L, Dh)
        q = self.q(self.ln_q(self.queries)).unflatten(-1, (self.n_heads, -1)).transpose(0, 1)  # (nh, K, Dh)
        mask = (torch.arange(width, device=h.device)[None] < lengths[:, None])[:, None, None]  # (B, 1, 1, L)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q.expand(n_cells, -1, -1, -1), k, v, attn_mask=mask, dropout_p=p)
        x = self.queries + self.proj(y.transpose(1, 2).flatten(2))  # (B, K, d)
        return x + self.ff2(F.gelu(self.ff1(self.ln_ff(x))))  # (B, K, d)


class CrossAttentionDecoder(nn.Module):
    """Region queries (:class:`RegionQueries`) + the 3-state decoder (:class:`~.decoder.StateDecoder`).

    ``bin_region`` (n_genome_bins,): the region (0..K-1) of every bin of the genome — its chromosome,
    or its region class code. ``n_regions`` defaults to ``bin_region.max() + 1``.
    """

    def __init__(self, config: AtacformerConfig, bin_region: torch.Tensor, n_regions: int | None = None):
        super().__init__()
        bin_region = torch.as_tensor(bin_region, dtype=torch.long)
        n_regions = int(bin_region.max()) + 1 if n_regions is None else int(n_regions)
        if len(bin_region) and (int(bin_region.min()) < 0 or int(bin_region.max()) >= n_regions):
            raise ValueError(f"bin_region must hold region ids in [0, {n_regions})")
        self.regions = RegionQueries(config, n_regions)
        self.states = StateDecoder(config, bin_region)

    def forward(self, h: torch.Tensor, cu_seqlens: torch.Tensor, bin_e1: torch.Tensor, target_cell: torch.Tensor,
                target_bin: torch.Tensor, target_state: torch.Tensor, *,
                sample_rate: float | None = None) -> DecoderOutput:
        """h (T, d) packed encoder outputs; cu_seqlens (B+1,) of the B cells with targets; bin_e1 (n_bins, k)
        E1 rows of the decoder's bins (:meth:`StateDecoder.bin_embeddings`); sparse targets (N,) as in
        :meth:`StateDecoder.forward`."""
        out = self.regions(h, cu_seqlens)  # (B, K, d)
        return self.states(out, bin_e1, target_cell, target_bin, target_state, sample_rate=sample_rate)
