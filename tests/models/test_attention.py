"""The ``buckets`` slot layout: built once per batch, exact per-cell attention, and the same gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atacformer.models import Atacformer, AtacformerConfig, collate_cells
from atacformer.models import attention as A
from atacformer.models.attention import attend, from_slots, packed_context, to_slots


def _context(lengths):
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    return packed_context(cu, max(lengths), device=torch.device("cpu"), backend="buckets"), cu.long()


@pytest.mark.parametrize("lengths", [[7], [5, 5, 5], [40, 3, 17, 17, 9, 1, 33, 2], list(range(1, 30))])
def test_slot_layout_holds_every_token_once_in_length_groups(lengths):
    ctx, cu = _context(lengths)
    total = int(cu[-1])
    slots = ctx.slots.tolist()
    real = [s for s in slots if s < total]
    assert sorted(real) == list(range(total))  # every stream token in exactly one slot
    assert torch.equal(ctx.slots[ctx.inverse], torch.arange(total))  # inverse puts them back in stream order
    start = 0
    for b in ctx.buckets:  # consecutive (cells × width) blocks; each row is one whole cell, padded at its end
        assert b.start == start
        block = ctx.slots[start:start + b.cells * b.width].view(b.cells, b.width)
        n_real = (block < total).sum(1)
        assert n_real.max() == b.width and (block[:, :1] < total).all()
        for row, n in zip(block.tolist(), n_real.tolist(), strict=False):
            cell = int(np.searchsorted(cu.numpy(), row[0], side="right")) - 1
            assert n == lengths[cell] and row[:n] == list(range(row[0], row[0] + n))
            assert all(s == total for s in row[n:])
        assert (b.key_mask is None) == bool((block < total).all())
        assert b.cells * b.width <= (1 + A.BUCKET_SLACK) * int(n_real.sum())  # padding within the slack
        start += b.cells * b.width
    assert start == len(slots)
    ids = torch.arange(total) + 10
    assert torch.equal(to_slots(ids, ctx, 0), torch.where(ctx.slots < total, ctx.slots + 10, 0))


def test_slot_attention_and_gradients_equal_per_cell_attention():
    torch.manual_seed(0)
    lengths = [23, 4, 23, 11, 12, 30, 1]
    ctx, cu = _context(lengths)
    total, H, Dh = int(cu[-1]), 2, 8
    q, k, v = (torch.randn(total, H, Dh, requires_grad=True) for _ in range(3))
    qs, ks, vs = (torch.cat([x, x.new_zeros(1, H, Dh)])[ctx.slots] for x in (q, k, v))  # (S, H, Dh), zero padding
    out = from_slots(attend(qs, ks, vs, ctx), ctx)  # (T, H, Dh)
    weight = torch.randn(total, H, Dh)
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    for i in range(len(lengths)):
        s, e = int(cu[i]), int(cu[i + 1])
        qi, ki, vi = (x.detach()[s:e].transpose(0, 1).requires_grad_() for x in (q, k, v))  # (H, L, Dh)
        ref = F.scaled_dot_product_attention(qi, ki, vi)
        torch.testing.assert_close(out[s:e], ref.transpose(0, 1), atol=1e-5, rtol=0)
        ref_grads = torch.autograd.grad((ref * weight[s:e].transpose(0, 1)).sum(), (qi, ki, vi))
        for g, r in zip(grads, ref_grads, strict=False):
            torch.testing.assert_close(g[s:e], r.transpose(0, 1), atol=1e-5, rtol=0)


def test_buckets_encoder_gradients_equal_segments(toy_vocab, make_cells):
    torch.manual_seed(0)
    # float64: the two layouts sum in other orders, and fp32 rounding would hide a real difference
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, n_layers=2, dropout=0.0)).train().double()
    batch = collate_cells(make_cells(toy_vocab, 9, seed=4, low=1, high=35), toy_vocab, rng=np.random.default_rng(0))
    grads = {}
    for backend in ("buckets", "segments"):
        model.attention = backend
        model.zero_grad(set_to_none=True)
        h = model.encode(batch)  # (T, d)
        (h.pow(2).sum(1) * torch.linspace(0, 1, h.shape[0], dtype=h.dtype)).sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None}
    assert grads["buckets"].keys() == grads["segments"].keys() and len(grads["buckets"]) > 10
    for name, g in grads["buckets"].items():
        torch.testing.assert_close(g, grads["segments"][name], atol=1e-10, rtol=1e-10, msg=name)
    assert grads["buckets"]["embed.e1.weight"][0].abs().sum() == 0  # padding slots feed no gradient to <pad>
