"""The cross-attention decoder: per-cell attention over a packed stream, bounded memory, it learns."""

import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from atacformer.models import AtacformerConfig, collate_cells
from atacformer.models.attention import packed_context
from atacformer.models.cross_decoder import CrossAttentionDecoder, RegionQueries
from atacformer.models.encoder import Encoder


def _config(vocab, **overrides):
    return AtacformerConfig.from_preset("tiny", vocab, dropout=0.0, **overrides)


def _regions(vocab, n_regions=5):
    return torch.arange(vocab.n_bins) % n_regions  # (n_bins,) e.g. a class code per bin


def _packed(lengths, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    return torch.randn(int(cu[-1]), d, generator=g), cu


def test_packed_equals_each_cell_alone(toy_vocab):
    torch.manual_seed(0)
    queries = RegionQueries(_config(toy_vocab), n_regions=6).eval()
    h, cu = _packed([3, 17, 1, 9, 30])
    packed = queries(h, cu)  # (B, K, d)
    assert packed.shape == (5, 6, 32)
    for b in range(5):
        s, e = int(cu[b]), int(cu[b + 1])
        alone = queries(h[s:e], torch.tensor([0, e - s]))
        torch.testing.assert_close(packed[b], alone[0], atol=1e-5, rtol=0)
    # trailing sentences beyond the B cells (second views) are not read
    more = queries(torch.cat([h, torch.randn(4, 32)]), cu)
    torch.testing.assert_close(more, packed, atol=1e-6, rtol=0)


def test_attention_is_per_cell_softmax_and_queries_are_independent(toy_vocab):
    torch.manual_seed(1)
    q = RegionQueries(_config(toy_vocab), n_regions=4).eval()
    h, cu = _packed([5, 8], seed=3)
    out = q(h, cu)
    # explicit attention for cell 1 (rows 5..12), written out
    keys, values = q.kv(h[5:13]).chunk(2, dim=-1)  # (L, d) each
    query = q.q(q.ln_q(q.queries))  # (K, d)
    heads = []
    for i in range(q.n_heads):
        sl = slice(16 * i, 16 * (i + 1))
        w = torch.softmax(query[:, sl] @ keys[:, sl].T / math.sqrt(16), dim=-1)  # (K, L)
        heads.append(w @ values[:, sl])
    x = q.queries + q.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(out[1], x + q.ff2(torch.nn.functional.gelu(q.ff1(q.ln_ff(x)))), atol=1e-5, rtol=0)
    # moving query 0 changes region 0's output only
    with torch.no_grad():
        q.queries[0] += 1.0
    moved = q(h, cu)
    assert not torch.allclose(moved[:, 0], out[:, 0])
    torch.testing.assert_close(moved[:, 1:], out[:, 1:], atol=1e-6, rtol=0)


class _LargestPerCell(TorchFunctionMode):
    """Largest tensor of shape (B, ...) any torch call returns (forward, and the recomputation of the
    checkpointed chunks in backward): the decoder's activation size, E1 (n_bins, k) and its gradient aside."""

    def __init__(self, n_cells):
        super().__init__()
        self.n_cells, self.largest = n_cells, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() > 1 and t.shape[0] == self.n_cells:
                self.largest = max(self.largest, t.numel())
        return out


def _largest_activation(dec, vocab, make_cells, n_cells=4):
    batch = collate_cells(make_cells(vocab, n_cells, seed=0), vocab, mask_fraction=0.3, rng=np.random.default_rng(0))
    h = torch.randn(batch.num_tokens, 32, requires_grad=True)
    e1 = torch.randn(vocab.n_bins, 16, requires_grad=True)
    with _LargestPerCell(n_cells) as mode:
        out = dec(h, batch.cu_seqlens, e1, batch.target_cell, batch.target_bin, batch.target_state)
        out.loss.backward()
    assert torch.isfinite(h.grad).all() and e1.grad.abs().sum() > 0
    return mode.largest


def test_memory_is_bounded_in_the_bin_count(make_cells):
    from atacformer.genome import Genome
    from atacformer.tokenize import BinVocab

    largest = {}
    for n_bins in (200, 2000):
        vocab = BinVocab(Genome.from_chrom_sizes({"chr1": n_bins * 100}, name=f"g{n_bins}"), 100)
        for chunk in (16, 100_000):
            torch.manual_seed(0)
            dec = CrossAttentionDecoder(_config(vocab, decoder_chunk_size=chunk), _regions(vocab))
            largest[n_bins, chunk] = _largest_activation(dec, vocab, make_cells)
    # chunked: the largest is (B, chunk, hidden) or the padded keys/values (B, L_max, 2d), whatever the bins
    assert largest[200, 16] == largest[2000, 16] < 4 * 200 * 32
    assert largest[2000, 100_000] >= 4 * 2000 * 32  # unchunked: (B, n_bins, hidden) — the check can fail


def test_loss_decreases_on_a_toy_problem(toy_vocab):
    torch.manual_seed(0)
    cfg = _config(toy_vocab)
    encoder = Encoder(cfg)
    dec = CrossAttentionDecoder(cfg, _regions(toy_vocab, 3))
    params = [*encoder.parameters(), *dec.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2)
    blocks = [np.arange(0, 10), np.arange(20, 30)]  # two cell types, each with its own open bins
    cells = [{"bin_ids": blocks[i % 2]} for i in range(8)]
    losses = []
    for step in range(40):
        batch = collate_cells(cells, toy_vocab, mask_fraction=0.3, rng=np.random.default_rng(step))
        ctx = packed_context(batch.cu_seqlens, batch.max_seqlen, device=torch.device("cpu"), backend="segments")
        h = encoder(batch.input_ids, ctx)  # (T, d)
        bin_e1 = dec.states.bin_embeddings(encoder.embed.e1.weight[2 + toy_vocab.n_chroms:])
        out = dec(h, batch.cu_seqlens, bin_e1, batch.target_cell, batch.target_bin, batch.target_state)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_bad_region_ids_and_empty_cells(toy_vocab):
    cfg = _config(toy_vocab)
    with pytest.raises(ValueError, match="region ids"):
        CrossAttentionDecoder(cfg, _regions(toy_vocab, 3), n_regions=2)
    h, _ = _packed([3])
    with pytest.raises(ValueError, match="at least one token"):
        RegionQueries(cfg, 2)(h, torch.tensor([0, 3, 3]))
