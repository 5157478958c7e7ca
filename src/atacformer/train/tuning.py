"""Fine-tuning helpers a user can also apply in their own loop: freeze parts of the encoder, change
the dropout rate for a while (enformer-pytorch style composable pieces)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def freeze(model: nn.Module, *, trainable_last_layers: int | None = None, train_embeddings: bool = False) -> None:
    """Freeze the encoder except its last ``trainable_last_layers`` layers (None: all layers trainable).

    The genome-wide bin-ID table (vocab × k, ~10 M values at 5 kb) stays frozen unless
    ``train_embeddings``: a few thousand labelled cells touch only a small share of its rows, and
    updating (or weight-decaying) the whole table every step costs more than the rest of the model."""
    enc = model.encoder
    n = len(enc.layers)
    keep = n if trainable_last_layers is None else min(trainable_last_layers, n)
    for p in enc.parameters():
        p.requires_grad_(False)
    for layer in list(enc.layers)[n - keep :]:
        for p in layer.parameters():
            p.requires_grad_(True)
    if keep > 0:
        for p in enc.ln_f.parameters():
            p.requires_grad_(True)
    if train_embeddings:
        for p in enc.embed.parameters():
            p.requires_grad_(True)



@contextmanager
def dropout_rate(model: nn.Module, p: float | None) -> Iterator[None]:
    """Temporarily set every dropout probability in ``model`` (``nn.Dropout`` modules and the attention
    layers' float ``dropout``) to ``p``; None leaves them as configured."""
    if p is None:
        yield
        return
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    saved = []
    for m in model.modules():
        attr = "p" if isinstance(m, nn.Dropout) else "dropout"
        if isinstance(getattr(m, attr, None), float):
            saved.append((m, attr, getattr(m, attr)))
            setattr(m, attr, p)
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)
