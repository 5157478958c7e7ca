"""EpiAttend: an Enformer-style network over DNA sequence plus cell-type epigenome tracks.

Data flow (B batch, L bp, P = L / 128 positions, N = P - 2 * crop outputs)::

    seq (B, L, 4) ──stem──tower+attention pooling──▶ s (B, Cs, P) ─┐
    epi (B, E, P) ──conv stem at 128 bp────────────▶ e (B, Ce, P) ─┴─ concat ─ convs ─ concat s ─ convs
        ─▶ (B, P, D) ─ transformer (relative positions) ─ crop ─▶ (B, N, D) ─ heads + softplus ─▶ (B, T, N)

``config.mode`` switches the ablations: ``"sequence"`` drops the epigenome stem, ``"epigenome"`` drops
the sequence trunk, ``"both"`` is the full model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EpiAttendConfig


class ConvBlock(nn.Module):
    """BatchNorm → GELU → Conv1d (Enformer's conv block), length preserved."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1):
        super().__init__()
        self.norm = nn.BatchNorm1d(c_in)
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, L) -> (B, c_out, L)
        return self.conv(F.gelu(self.norm(x)))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class AttentionPool(nn.Module):
    """Softmax-weighted pooling over pairs of positions (Enformer), weights from a 1x1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.logits = nn.Conv1d(channels, channels, 1, bias=False)
        nn.init.eye_(self.logits.weight[:, :, 0])
        with torch.no_grad():
            self.logits.weight.mul_(2.0)  # start close to max pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, C, L / 2)
        logits = self.logits(x)  # (B, C, L)
        x0, x1 = x[..., 0::2], x[..., 1::2]  # (B, C, L / 2) each
        w0 = torch.sigmoid(logits[..., 0::2] - logits[..., 1::2])  # softmax over a pair = sigmoid of the difference
        return x1 + w0 * (x0 - x1)


class SequenceTrunk(nn.Module):
    """One-hot DNA → conv stem → conv tower with attention pooling, down to ``2 ** (1 + n_tower)`` bp."""

    def __init__(self, cfg: EpiAttendConfig):
        super().__init__()
        c0, c1 = cfg.stem_channels, cfg.seq_channels
        self.stem = nn.Sequential(
            nn.Conv1d(4, c0, cfg.stem_kernel, padding=cfg.stem_kernel // 2),
            Residual(ConvBlock(c0, c0, 1)),
            AttentionPool(c0),
        )
        # channel widths grow geometrically from c0 to c1 over the tower
        widths = [round(c0 * (c1 / c0) ** (i / max(cfg.n_tower - 1, 1))) for i in range(cfg.n_tower)]
        stages, c_in = [], c0
        for c_out in widths:
            stages += [ConvBlock(c_in, c_out, 5), Residual(ConvBlock(c_out, c_out, 1)), AttentionPool(c_out)]
            c_in = c_out
        self.tower = nn.Sequential(*stages)
        self.out_channels = c_in

    def forward(self, seq: torch.Tensor) -> torch.Tensor:  # (B, L, 4) -> (B, Cs, L / bin_size)
        return self.tower(self.stem(seq.transpose(1, 2)))


class EpigenomeStem(nn.Module):
    """Cell-type tracks at 128 bp → 1x1 conv → residual conv blocks (kernel 5)."""

    def __init__(self, cfg: EpiAttendConfig):
        super().__init__()
        h = cfg.epi_hidden
        self.net = nn.Sequential(
            nn.Conv1d(cfg.epi_channels, h, 1), *[Residual(ConvBlock(h, h, 5)) for _ in range(cfg.epi_layers)]
        )
        self.out_channels = h

    def forward(self, epi: torch.Tensor) -> torch.Tensor:  # (B, E, P) -> (B, Ce, P)
        return self.net(epi)


def relative_position_features(n: int, n_features: int) -> torch.Tensor:
    """Enformer-style basis of relative distance: exponential decays and central masks, each
    symmetric and sign-multiplied. Returns ``(2n - 1, n_features)`` for distances ``-(n-1)..n-1``."""
    d = torch.arange(-(n - 1), n, dtype=torch.float32)[:, None]  # (2n-1, 1)
    k = n_features // 4
    half_life = 2.0 ** torch.linspace(math.log2(3.0), math.log2(max(n, 4)), k)  # (k,)
    expo = torch.exp(-math.log(2.0) / half_life * d.abs())  # (2n-1, k)
    widths = 2.0 ** torch.arange(1, k + 1, dtype=torch.float32) - 1  # (k,)
    central = (widths > d.abs()).float()  # (2n-1, k)
    sym = torch.cat([expo, central], dim=-1)  # (2n-1, 2k)
    return torch.cat([sym, torch.sign(d) * sym], dim=-1)  # (2n-1, 4k)


class RelativeMHA(nn.Module):
    """Multi-head self-attention with Transformer-XL / Enformer relative position logits."""

    def __init__(self, cfg: EpiAttendConfig):
        super().__init__()
        h, k, d = cfg.n_heads, cfg.key_size, cfg.d_model
        self.h, self.k, self.dv = h, k, d // h
        self.q = nn.Linear(d, h * k, bias=False)
        self.kv = nn.Linear(d, h * (k + self.dv), bias=False)
        self.r = nn.Linear(cfg.pos_features, h * k, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(h, 1, k))  # content bias
        self.r_r_bias = nn.Parameter(torch.zeros(h, 1, k))  # position bias
        self.out = nn.Linear(h * self.dv, d)
        nn.init.zeros_(self.out.weight)  # each block starts as the identity
        self.drop = nn.Dropout(cfg.attn_dropout)
        self.n_features = cfg.pos_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, _ = x.shape  # (B, P, D)
        q = self.q(x).view(b, p, self.h, self.k).transpose(1, 2) * self.k**-0.5  # (B, H, P, K)
        kv = self.kv(x).view(b, p, self.h, self.k + self.dv).transpose(1, 2)
        key, val = kv.split([self.k, self.dv], dim=-1)  # (B, H, P, K), (B, H, P, Dv)
        content = (q + self.r_w_bias) @ key.transpose(-1, -2)  # (B, H, P, P)
        feats = relative_position_features(p, self.n_features).to(x)  # (2P-1, F)
        r = self.r(feats).view(2 * p - 1, self.h, self.k).permute(1, 2, 0)  # (H, K, 2P-1)
        rel = (q + self.r_r_bias) @ r  # (B, H, P, 2P-1): column c is distance c - (P-1)
        idx = torch.arange(p, device=x.device)
        rel_idx = (idx[None, :] - idx[:, None] + p - 1).expand(b, self.h, p, p)  # j - i + P - 1
        logits = content + rel.gather(-1, rel_idx)  # (B, H, P, P)
        attn = logits.softmax(dim=-1)
        y = (self.drop(attn) @ val).transpose(1, 2).reshape(b, p, self.h * self.dv)  # (B, P, H*Dv)
        return self.out(y), attn


class TransformerBlock(nn.Module):
    def __init__(self, cfg: EpiAttendConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.attn = nn.LayerNorm(d), RelativeMHA(cfg)
        self.mlp = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Dropout(cfg.dropout), nn.ReLU(),
            nn.Linear(2 * d, d), nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, P, D)
        y, attn = self.attn(self.ln1(x))
        x = x + self.drop(y)
        return x + self.mlp(x), attn  # attn (B, H, P, P)


class EpiAttend(nn.Module):
    """Sequence + epigenome → per-position output tracks at 128 bp (see module docstring)."""

    def __init__(self, cfg: EpiAttendConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = SequenceTrunk(cfg) if cfg.uses_sequence else None
        self.epi = EpigenomeStem(cfg) if cfg.uses_epigenome else None
        cs = self.trunk.out_channels if self.trunk is not None else 0
        ce = self.epi.out_channels if self.epi is not None else 0
        d = cfg.d_model
        self.fuse = nn.Sequential(ConvBlock(cs + ce, d, 1), Residual(ConvBlock(d, d, 5)))
        self.refuse = nn.Sequential(ConvBlock(d + cs, d, 1), Residual(ConvBlock(d, d, 5))) if cs else None
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Dropout(cfg.dropout), nn.GELU())
        self.head = nn.Linear(2 * d, cfg.n_targets)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, seq: torch.Tensor | None = None, epi: torch.Tensor | None = None, *, return_attention: bool = False
    ):
        """``seq`` (B, L, 4) one-hot, ``epi`` (B, E, P) → predictions (B, T, N) (and attention maps
        ``[(B, H, P, P)] * n_layers`` when ``return_attention``).

        ``epi`` may carry a cell-type axis, (B, C, E, P): the sequence trunk then runs once per window
        and is shared by the C cell types, and predictions are (B, C, T, N) (maps over B * C).
        """
        cfg, parts = self.cfg, []
        n_cells = epi.shape[1] if epi is not None and epi.ndim == 4 else None  # also used by the sequence-only ablation
        if self.epi is not None:
            if epi is None or epi.shape[-2:] != (cfg.epi_channels, cfg.n_positions) or epi.ndim not in (3, 4):
                got = None if epi is None else tuple(epi.shape)
                raise ValueError(f"expected epi of shape (B, [C,] {cfg.epi_channels}, {cfg.n_positions}), got {got}")
            if n_cells is not None:
                epi = epi.flatten(0, 1)  # (B * C, E, P)
            parts.append(self.epi(epi))  # (B', Ce, P)
        if self.trunk is not None:
            if seq is None or seq.shape[1:] != (cfg.seq_len, 4):
                raise ValueError(f"expected seq of shape (B, {cfg.seq_len}, 4), "
                                 f"got {None if seq is None else tuple(seq.shape)}")
            s = self.trunk(seq)  # (B, Cs, P)
            if n_cells is not None:
                s = s.repeat_interleave(n_cells, dim=0)  # (B * C, Cs, P): shared by the cell types
            parts.insert(0, s)
        x = self.fuse(torch.cat(parts, dim=1))  # (B, D, P)
        if self.trunk is not None:
            x = self.refuse(torch.cat([x, s], dim=1))  # (B, D, P): concatenated again with the sequence stream
        x = x.transpose(1, 2)  # (B, P, D)
        maps = []
        for block in self.blocks:
            x, attn = block(x)
            maps.append(attn)
        x = x[:, cfg.crop : cfg.n_positions - cfg.crop]  # (B, N, D)
        y = F.softplus(self.head(self.final(x))).transpose(1, 2)  # (B', T, N)
        if n_cells is not None:
            y = y.unflatten(0, (-1, n_cells))  # (B, C, T, N)
        return (y, maps) if return_attention else y
