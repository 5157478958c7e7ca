"""The per-region 3-state decoder and its genome-wide loss, in constant memory.

A *region* is what one ``<eos>`` output stands for: a chromosome (today's decoder), a region class, a
chromosome × class pair, or a cross-attention query (:mod:`atacformer.tokenize.vocab`); the buffer
``bin_region`` holds the region of every bin (computed from the chromosome sizes, or — with region
classes — set from the data by ``pretrain`` and saved with the weights).

For cell b and bin j in region c: ``logits = W2 · gelu(A · compress(h[b, eos_c]) + Bm · E1[j] + b1) + b2``
— the design's FFN on ``concat(compress(eos), E1[bin])`` with its first layer split into the eos
part ``u[b, c] = A · compress(h)`` (B × C × H, tiny) and the bin part ``v[j] = Bm · E1[j]`` (computed
once per step for the whole batch). Bins are processed in chunks under activation checkpointing, so
memory is O(B × chunk × H), independent of the genome size.

Loss: class-weighted cross-entropy over *all* (cell, bin) pairs with a fixed denominator
``Σ_s w_s · count_s`` (counts are known exactly from the sparse targets). With
``state0_sample_rate = p`` (training only), every bin that is open in some cell of the batch is
evaluated exactly and each other bin (closed in every cell) is kept with probability p and weighted
1/p, so the numerator — hence the loss and its gradient — is an unbiased estimate of the full one.
That dense grid (B × every bin open in some cell of the batch) is cheap for short cells and far too big for
10x-depth cells, whose union covers most of the genome: training with ``p`` set therefore evaluates *pairs*
(:meth:`StateDecoder._sparse`) — each cell's own open pairs, at most ``config.state2_sample_max`` of its
removed (state-2) pairs (kept with probability ``q_b``, weighted ``1/q_b``), and ``p × n_bins`` closed pairs
drawn uniformly with replacement per cell (weighted ``n_bins / draws``) — still unbiased, at a cost linear
in the batch's pairs.

Decoder bins (``config.decoder_bins``): ``"all"`` predicts every bin of the genome; ``"observed"``
predicts only the ``config.n_decoder_bins`` bins in the persistent buffer ``bins`` (the bins open in at
least one training cell, set by ``pretrain``): a bin never open in the corpus carries no information
about cells. Targets on other bins are ignored, and "all (cell, bin) pairs" above means all pairs over
the decoder's bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import AtacformerConfig

HIST_RANGE = 30.0  # removed-vs-closed log-odds are histogrammed over [-30, 30]
HIST_BINS = 4096


@dataclass
class DecoderOutput:
    loss: torch.Tensor  # () class-weighted mean cross-entropy over all (cell, bin) pairs
    state_ce_sum: torch.Tensor  # (3,) summed (importance-weighted) cross-entropy per true state, detached
    state_count: torch.Tensor  # (3,) exact number of (cell, bin) pairs per state
    state_hist: torch.Tensor  # (2, HIST_BINS) weighted histogram of logit2 - logit0: row 0 closed, row 1 removed


class DecoderMLP(nn.Module):
    """The decoder's weights: ``compress`` (d → eos_dim), the split first layer (``fc_eos``, ``fc_bin``)
    and ``out`` (hidden → 3). :class:`StateDecoder` is one; the contrastive decoder is another, run by
    the same :meth:`StateDecoder.forward` (``mlp=``)."""

    def __init__(self, config: AtacformerConfig):
        super().__init__()
        self.compress = nn.Linear(config.d_model, config.eos_dim)
        self.fc_eos = nn.Linear(config.eos_dim, config.decoder_hidden)  # eos part of the first FFN layer
        self.fc_bin = nn.Linear(config.k, config.decoder_hidden, bias=False)  # bin part
        self.out = nn.Linear(config.decoder_hidden, 3)


class StateDecoder(DecoderMLP):
    def __init__(self, config: AtacformerConfig, bin_region: torch.Tensor):
        """``bin_region`` (n_genome_bins,): region (chromosome, class, …) of every bin of the genome; a
        saved buffer when the config has region classes (the codes come from the data)."""
        super().__init__(config)
        self.chunk_size = config.decoder_chunk_size
        self.sample_rate = config.state0_sample_rate
        self.state2_max = config.state2_sample_max
        self.register_buffer("bin_region", torch.as_tensor(bin_region).long(), persistent=bool(config.region_classes))
        self.all_bins = config.decoder_bins == "all"
        n = len(bin_region) if self.all_bins else config.n_decoder_bins
        # (n_bins,) sorted global ids of the decoder's bins; saved with the model when they are a subset
        self.register_buffer("bins", torch.arange(n), persistent=not self.all_bins)
        self.register_buffer("class_weights", torch.tensor(config.state_class_weights), persistent=False)

    @property
    def n_bins(self) -> int:
        """Bins the decoder predicts (the genome's, or the observed subset)."""
        return int(self.bins.shape[0])

    @torch.no_grad()
    def set_bins(self, bins: torch.Tensor) -> None:
        """Set the observed bins (sorted, unique global ids; as many as ``config.n_decoder_bins``)."""
        bins = torch.as_tensor(bins, dtype=torch.long)
        if self.all_bins or bins.shape != self.bins.shape:
            raise ValueError(f"set_bins needs decoder_bins='observed' and {self.n_bins} bins, got {tuple(bins.shape)}")
        if len(bins) and (bool((bins[1:] <= bins[:-1]).any()) or int(bins[0]) < 0
                          or int(bins[-1]) >= len(self.bin_region)):
            raise ValueError("decoder bins must be sorted, unique global bin ids")
        self.bins.copy_(bins)

    @torch.no_grad()
    def set_regions(self, bin_region: torch.Tensor, n_regions: int) -> None:
        """Set the region (0..n_regions-1) of every bin of the genome."""
        bin_region = torch.as_tensor(bin_region, dtype=torch.long)
        if bin_region.shape != self.bin_region.shape or (
                len(bin_region) and (int(bin_region.min()) < 0 or int(bin_region.max()) >= n_regions)):
            raise ValueError(f"bin regions must be {tuple(self.bin_region.shape)} ids in [0, {n_regions}), got "
                             f"shape {tuple(bin_region.shape)}")
        self.bin_region.copy_(bin_region)

    def bin_embeddings(self, e1_bins: torch.Tensor) -> torch.Tensor:
        """The decoder's rows (n_bins, k) of the bins' E1 table (n_genome_bins, k)."""
        return e1_bins if self.all_bins else e1_bins[self.bins]

    def _local(self, target_cell, target_bin, target_state):
        """Targets on the decoder's bins, with ``target_bin`` as column in ``bins`` (others dropped)."""
        if self.all_bins:
            return target_cell, target_bin, target_state
        col = torch.searchsorted(self.bins, target_bin).clamp_(max=max(self.n_bins - 1, 0))  # (N,)
        hit = self.bins[col] == target_bin
        return target_cell[hit], col[hit], target_state[hit]

    def forward(self, eos_h: torch.Tensor, bin_e1: torch.Tensor, target_cell: torch.Tensor,
                target_bin: torch.Tensor, target_state: torch.Tensor, *,
                sample_rate: float | None = None, mlp: DecoderMLP | None = None) -> DecoderOutput:
        """eos_h (B, R, d) encoder outputs at the R region <eos>; bin_e1 (n_bins, k) = E1 rows of the
        decoder's bins (:meth:`bin_embeddings`); sparse targets (N,) with global bin ids. ``sample_rate``
        overrides the config's (training) state-0 sampling; ``mlp`` runs other weights (the contrastive
        decoder's) on the same bins."""
        n_cells, dev = eos_h.shape[0], eos_h.device
        mlp = self if mlp is None else mlp
        target_cell, target_bin, target_state = self._local(target_cell, target_bin, target_state)
        u = mlp.fc_eos(mlp.compress(eos_h))  # (B, R, H)
        rate = self.sample_rate if sample_rate is None and self.training else sample_rate
        if self.training and rate is not None and rate < 1.0:
            count = self._counts(n_cells, target_state)
            ce_sum, hist = self._sparse(mlp, u, bin_e1, target_cell, target_bin, target_state, rate)
            loss = (self.class_weights * ce_sum).sum() / (self.class_weights * count).sum()
            return DecoderOutput(loss=loss, state_ce_sum=ce_sum.detach(), state_count=count, state_hist=hist)
        bins, weight = self._eval_bins(target_bin, rate, dev)  # (n_eval,), (n_eval,) or None
        e1 = bin_e1 if bins is None else bin_e1[bins]  # (n_eval, k)
        n_eval = e1.shape[0]
        pos = target_bin if bins is None else torch.searchsorted(bins, target_bin)  # (N,) column of each target
        order = torch.argsort(pos)
        pos, t_cell, t_state = pos[order], target_cell[order], target_state[order]
        starts = list(range(0, n_eval, self.chunk_size))
        cuts = torch.searchsorted(pos, torch.tensor(starts[1:], device=pos.device)).tolist()
        cuts = [0, *cuts, len(pos)]
        ce_sum = eos_h.new_zeros(3, dtype=torch.float32)
        hist = torch.zeros(2, HIST_BINS, dtype=torch.float64, device=dev)
        for i, (s, e1_chunk) in enumerate(zip(starts, torch.split(e1, self.chunk_size), strict=False)):
            n = e1_chunk.shape[0]
            y = torch.zeros(n_cells, n, dtype=torch.long, device=dev)  # (B, n) state 0 unless open
            a, b = cuts[i], cuts[i + 1]
            y[t_cell[a:b], pos[a:b] - s] = t_state[a:b]
            col = torch.arange(s, s + n, device=dev)
            region = self.bin_region[self.bins[col if bins is None else bins[s : s + n]]]  # (n,)
            w = None if weight is None else weight[s : s + n]
            if torch.is_grad_enabled() and (u.requires_grad or e1_chunk.requires_grad):
                part, h = checkpoint(self._chunk, mlp, u, e1_chunk, region, y, w, use_reentrant=False)
            else:
                part, h = self._chunk(mlp, u, e1_chunk, region, y, w)
            ce_sum = ce_sum + part
            hist += h
        count = self._counts(n_cells, target_state)
        loss = (self.class_weights * ce_sum).sum() / (self.class_weights * count).sum()
        return DecoderOutput(loss=loss, state_ce_sum=ce_sum.detach(), state_count=count, state_hist=hist)

    @staticmethod
    def _chunk(mlp, u, e1_chunk, region, y, w):
        # u (B, R, H); e1_chunk (n, k); region (n,); y (B, n); w (n,) importance weights or None
        pre = u[:, region] + mlp.fc_bin(e1_chunk)  # (B, n, H); the bin part is shared by all cells
        logits = mlp.out(F.gelu(pre))  # (B, n, 3)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view_as(y)  # (B, n)
        if w is not None:
            ce = ce * w
        part = torch.zeros(3, device=ce.device, dtype=ce.dtype).index_add(0, y.flatten(), ce.flatten())  # (3,)
        with torch.no_grad():
            hist = _log_odds_hist(logits.detach().float(), y, w)
        return part, hist

    def _sparse(self, mlp, u, bin_e1, t_cell, t_col, t_state, rate):
        """Training estimate over sampled (cell, bin) pairs: (3,) weighted CE sums and the log-odds histogram.
        u (B, R, H); bin_e1 (n_bins, k); targets (N,) with ``t_col`` a column of :attr:`bins`."""
        n_cells, n_bins, dev = u.shape[0], self.n_bins, u.device
        keep, w_open = self._sample_removed(t_cell, t_state, n_cells)
        draws = max(1, round(rate * n_bins))
        c_cell = torch.arange(n_cells, device=dev).repeat_interleave(draws)  # (B * draws,)
        c_col = torch.randint(0, n_bins, (n_cells * draws,), device=dev)
        open_key = torch.sort(t_cell * n_bins + t_col).values  # (N,) the cells' open pairs
        key = c_cell * n_bins + c_col
        hit = open_key[torch.searchsorted(open_key, key).clamp_(max=max(len(open_key) - 1, 0))] == key
        closed = ~hit if len(open_key) else torch.ones_like(key, dtype=torch.bool)
        cell = torch.cat([t_cell[keep], c_cell[closed]])  # (P,)
        col = torch.cat([t_col[keep], c_col[closed]])
        y = torch.cat([t_state[keep], torch.zeros(int(closed.sum()), dtype=torch.long, device=dev)])
        w = torch.cat([w_open[keep], torch.full((int(closed.sum()),), n_bins / draws, device=dev)])
        uniq, inv = torch.unique(col, return_inverse=True)
        region = self.bin_region[self.bins[uniq]][inv]  # (P,)
        ce_sum = u.new_zeros(3, dtype=torch.float32)
        hist = torch.zeros(2, HIST_BINS, dtype=torch.float64, device=dev)
        step = self.chunk_size * 16
        for s in range(0, len(cell), step):
            sl = slice(s, s + step)
            args = (mlp, u, bin_e1, uniq, inv[sl], cell[sl], region[sl], y[sl], w[sl])
            if torch.is_grad_enabled():
                part, h = checkpoint(self._pair_chunk, *args, use_reentrant=False)
            else:
                part, h = self._pair_chunk(*args)
            ce_sum, hist = ce_sum + part, hist + h
        return ce_sum, hist

    def _sample_removed(self, t_cell, t_state, n_cells):
        """Which targets to evaluate (all state 1; state 2 thinned to ≈ ``state2_sample_max`` per cell) and
        their importance weights (N,)."""
        cap, w = self.state2_max, torch.ones(len(t_state), device=t_state.device)
        is2 = t_state == 2
        if cap is None or not len(t_state):
            return torch.ones_like(is2), w
        n2 = torch.bincount(t_cell[is2], minlength=n_cells).float()  # (B,)
        q = (cap / n2.clamp(min=1)).clamp(max=1.0)[t_cell]  # (N,) keep probability of each state-2 pair
        keep = ~is2 | (torch.rand(len(t_state), device=t_state.device) < q)
        return keep, torch.where(is2, 1.0 / q, w)

    @staticmethod
    def _pair_chunk(mlp, u, bin_e1, uniq, inv, cell, region, y, w):
        # pairs (P,): cell, region, state y, weight w; the bin part once per distinct bin of the step
        v = mlp.fc_bin(bin_e1[uniq])  # (U, H)
        logits = mlp.out(F.gelu(u[cell, region] + v[inv]))  # (P, 3)
        ce = F.cross_entropy(logits.float(), y, reduction="none") * w  # (P,)
        part = torch.zeros(3, device=ce.device, dtype=ce.dtype).index_add(0, y, ce)
        with torch.no_grad():
            hist = _log_odds_hist(logits.detach().float()[None], y[None], w)
        return part, hist

    def logits(self, eos_h: torch.Tensor, bin_e1: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(B, n, 3) state logits of the decoder bins ``columns`` (n,) (positions in :attr:`bins`) for
        eos_h (B, R, d); bin_e1 as in :meth:`forward`. Not chunked: for scoring chosen bins."""
        u = self.fc_eos(self.compress(eos_h))  # (B, R, H)
        region = self.bin_region[self.bins[columns]]  # (n,)
        return self.out(F.gelu(u[:, region] + self.fc_bin(bin_e1[columns])))

    def _eval_bins(self, target_bin, rate, dev):
        """Bins to evaluate (None = all) and their importance weights (None = all 1)."""
        if rate is None or rate >= 1.0:
            return None, None
        keep = torch.rand(self.n_bins, device=dev) < rate  # closed-everywhere bins kept with prob p
        keep[target_bin] = True  # bins open in some cell of the batch: always, exactly
        bins = torch.nonzero(keep).squeeze(1)  # (n_eval,) sorted
        exact = torch.zeros(self.n_bins, dtype=torch.bool, device=dev)
        exact[target_bin] = True
        weight = torch.where(exact[bins], 1.0, 1.0 / rate).to(torch.float32)
        return bins, weight

    def _counts(self, n_cells: int, target_state: torch.Tensor) -> torch.Tensor:
        open_counts = torch.bincount(target_state, minlength=3).float()  # (3,)
        open_counts[0] = n_cells * self.n_bins - open_counts[1] - open_counts[2]
        return open_counts


def _log_odds_hist(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """(2, HIST_BINS) weighted counts of logit2 - logit0 for closed (row 0) and removed (row 1) pairs."""
    score = (logits[..., 2] - logits[..., 0]).clamp(-HIST_RANGE, HIST_RANGE)  # (B, n)
    bucket = ((score + HIST_RANGE) * (HIST_BINS / (2 * HIST_RANGE))).long().clamp_(0, HIST_BINS - 1)
    key = bucket + HIST_BINS * (y == 2)  # (B, n) row 1 for removed pairs
    weight = ((y == 0) | (y == 2)).double()  # (B, n) state 1 (in the sentence) is not counted
    if w is not None:
        weight = weight * w.double()  # (n,) importance weights of sampled closed bins
    return torch.bincount(key.flatten(), weights=weight.flatten(), minlength=2 * HIST_BINS).view(2, HIST_BINS)
