"""Block-diagonal (per-cell) self-attention over a packed token stream, and over padded batches.

Backends for a packed stream of T tokens with boundaries ``cu_seqlens``:

- ``flash``: flash-attn's ``flash_attn_varlen_func`` (CUDA, fp16/bf16, when flash-attn is installed);
- ``segments``: one ``F.scaled_dot_product_attention`` call per cell on its own slice (any device,
  no padding at all);
- ``buckets``: cells sorted by length and cut into a few groups whose padded size is within
  ``BUCKET_SLACK`` of their real size. The encoder lays the stream out once per batch in these groups
  (``AttentionContext.slots``: T real tokens → S ≤ (1 + slack)·T slots) and runs every layer on that
  layout, so each group is a plain view for one fused SDPA call and no layer gathers or scatters
  tokens; the final hidden states are put back in stream order once. The default on CPU, where the
  per-cell loop pays a per-call cost;
- ``nested``: one SDPA call on a jagged nested tensor built over the stream (no copies);
- ``flex``: FlexAttention with a document mask (block-sparse; compiled on GPU; on CPU it has no
  backward and its eager fallback materialises the T × T scores, so it is for inference checks only).

Padded batches use one SDPA call with a key-padding mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F

try:  # optional GPU kernel
    from flash_attn import flash_attn_varlen_func
except ImportError:  # pragma: no cover - depends on the environment
    flash_attn_varlen_func = None

BACKENDS = ("auto", "flash", "buckets", "segments", "nested", "flex")
BUCKET_SLACK = 0.1  # a length group's padded attention size is at most 10% above its real size


@dataclass
class Bucket:
    """``cells`` sentences padded to ``width``: slots ``[start, start + cells * width)`` of the layout."""

    start: int
    cells: int
    width: int
    key_mask: torch.Tensor | None  # (G, 1, 1, Lg) bool, None when all G sentences have length Lg


@dataclass
class AttentionContext:
    """Per-forward layout information shared by all layers (built once, not per layer)."""

    cu_seqlens: torch.Tensor | None = None  # (B+1,) int32, packed layout
    max_seqlen: int = 0
    bounds: list[tuple[int, int]] | None = None  # python (start, end) per cell, for the segment loop
    buckets: list[Bucket] | None = None  # buckets: the length groups, consecutive in the slot layout
    slots: torch.Tensor | None = None  # buckets: (S,) stream position of each slot, T for a padding slot
    inverse: torch.Tensor | None = None  # buckets: (T,) slot of each stream token
    key_mask: torch.Tensor | None = None  # (B, 1, 1, L) bool, padded layout
    block_mask: object | None = None  # FlexAttention BlockMask
    backend: str = "segments"

    @property
    def packed(self) -> bool:
        return self.key_mask is None


def flash_available(device: torch.device) -> bool:
    return flash_attn_varlen_func is not None and device.type == "cuda"


def packed_context(cu_seqlens: torch.Tensor, max_seqlen: int, *, device: torch.device,
                   backend: str = "auto") -> AttentionContext:
    """Context for a packed stream; ``auto`` = flash when available, else length buckets."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "flash" if flash_available(device) else "buckets"
    if backend == "flash" and not flash_available(device):
        raise ValueError("attention backend 'flash' needs flash-attn and a CUDA device")
    ctx = AttentionContext(cu_seqlens=cu_seqlens.to(device=device, dtype=torch.int32), max_seqlen=int(max_seqlen),
                           backend=backend)
    if backend == "segments":
        b = cu_seqlens.tolist()
        ctx.bounds = list(pairwise(b))
    elif backend == "buckets":
        ctx.buckets, ctx.slots, ctx.inverse = _length_buckets(cu_seqlens.long().cpu(), device)
    elif backend == "flex":
        ctx.block_mask = _document_block_mask(ctx.cu_seqlens)
    return ctx


def padded_context(attention_mask: torch.Tensor) -> AttentionContext:
    return AttentionContext(key_mask=attention_mask[:, None, None, :], max_seqlen=attention_mask.shape[1],
                            backend="padded")


def to_slots(ids: torch.Tensor, ctx: AttentionContext, pad_id: int) -> torch.Tensor:
    """Token ids of a packed stream (T,) in the layout the layers run on: (S,) slots for ``buckets``
    (``pad_id`` in padding slots), the stream itself for the other backends."""
    if ctx.slots is None:
        return ids
    return torch.cat([ids, ids.new_full((1,), pad_id)])[ctx.slots]  # (S,)


def from_slots(x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
    """Hidden states (S, d) in the slot layout → (T, d) in stream order (identity without slots)."""
    return x if ctx.slots is None else x[ctx.inverse]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: AttentionContext, *,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Attention. Packed: q, k, v (T, H, Dh) → (T, H, Dh), or (S, H, Dh) in the slot layout of
    ``buckets`` (see :func:`to_slots`). Padded: (B, H, L, Dh) → (B, H, L, Dh)."""
    if not ctx.packed:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.key_mask, dropout_p=dropout_p)
    if ctx.backend == "flash":
        return flash_attn_varlen_func(q, k, v, ctx.cu_seqlens, ctx.cu_seqlens, ctx.max_seqlen, ctx.max_seqlen,
                                      dropout_p=dropout_p)
    if ctx.backend == "flex":
        return _flex(q, k, v, ctx.block_mask)
    if ctx.backend == "buckets":
        return _buckets(q, k, v, ctx, dropout_p)
    if ctx.backend == "nested":
        return _nested(q, k, v, ctx.cu_seqlens, dropout_p)
    return _segments(q, k, v, ctx.bounds, dropout_p)


def _segments(q, k, v, bounds, dropout_p):
    # q, k, v: (T, H, Dh); each cell attends within its own slice
    # (4-D inputs: with 3-D ones the CPU dispatcher falls back to the math kernel, O(L^2) memory)
    qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))  # (1, H, T, Dh) views
    outs = [F.scaled_dot_product_attention(qt[:, :, s:e], kt[:, :, s:e], vt[:, :, s:e], dropout_p=dropout_p)
            for s, e in bounds]  # each (1, H, L_i, Dh)
    return torch.cat(outs, dim=2)[0].transpose(0, 1)  # (T, H, Dh)


def _group_by_length(lengths: list[int]) -> list[list[int]]:
    """Cells sorted by length (longest first), cut greedily while a group's padded size (its longest
    length × its cells) stays within ``BUCKET_SLACK`` of its real size."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups, current, total = [], [], 0
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > (1 + BUCKET_SLACK) * (total + lengths[i]):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    groups.append(current)
    return groups


def _length_buckets(cu: torch.Tensor, device: torch.device):
    """The slot layout of a packed stream: (buckets, slots (S,), inverse (T,)); see ``Bucket``."""
    lengths = (cu[1:] - cu[:-1]).tolist()
    total = int(cu[-1])
    buckets, slots, start = [], [], 0
    for g in _group_by_length(lengths):
        width = lengths[g[0]]
        pos = torch.arange(width)[None, :]  # (1, Lg)
        valid = pos < torch.tensor([lengths[i] for i in g])[:, None]  # (G, Lg)
        slots.append(torch.where(valid, cu[g][:, None] + pos, total).flatten())  # (G*Lg,)
        mask = None if bool(valid.all()) else valid[:, None, None, :].to(device)  # (G, 1, 1, Lg)
        buckets.append(Bucket(start, len(g), width, mask))
        start += len(g) * width
    slots = torch.cat(slots)  # (S,)
    real = torch.nonzero(slots < total).squeeze(1)  # (T,) slots holding a token
    inverse = torch.empty(total, dtype=torch.long)
    inverse[slots[real]] = real
    return buckets, slots.to(device), inverse.to(device)


def _buckets(q, k, v, ctx, dropout_p):
    # q, k, v: (S, H, Dh) in the slot layout; each bucket is a (G, Lg) block of slots → SDPA on
    # (G, H, Lg, Dh) views, no gather; the outputs are already in slot order
    # (one split per tensor: its backward is one cat, where per-bucket slicing would allocate and
    # zero a full (S, H, Dh) gradient for every bucket)
    sizes = [b.cells * b.width for b in ctx.buckets]
    outs = []
    for b, qg, kg, vg in zip(ctx.buckets, q.split(sizes), k.split(sizes), v.split(sizes), strict=False):
        qg, kg, vg = (x.unflatten(0, (b.cells, b.width)).transpose(1, 2) for x in (qg, kg, vg))  # (G, H, Lg, Dh)
        y = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=b.key_mask, dropout_p=dropout_p)  # (G, H, Lg, Dh)
        outs.append(y.transpose(1, 2).flatten(0, 1))  # (G*Lg, H, Dh)
    return outs[0] if len(outs) == 1 else torch.cat(outs)  # (S, H, Dh)


def _nested(q, k, v, cu_seqlens, dropout_p):
    # (T, H, Dh) values + offsets → jagged (B, j, H, Dh) → (B, H, j, Dh) for SDPA
    offsets = cu_seqlens.long()
    qn, kn, vn = (torch.nested.nested_tensor_from_jagged(x.contiguous(), offsets).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(qn, kn, vn, dropout_p=dropout_p)
    return out.transpose(1, 2).values()  # (T, H, Dh)


def _document_block_mask(cu_seqlens: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    total = int(cu_seqlens[-1])
    doc = torch.repeat_interleave(
        torch.arange(len(cu_seqlens) - 1, device=cu_seqlens.device), (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    )  # (T,) cell of each token

    def same_cell(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    return create_block_mask(same_cell, None, None, total, total, device=cu_seqlens.device)


def _flex(q, k, v, block_mask):
    from torch.nn.attention.flex_attention import flex_attention

    out = flex_attention(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=block_mask)  # (1, H, T, Dh)
    return out[0].transpose(0, 1)
