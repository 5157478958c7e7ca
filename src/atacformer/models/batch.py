"""Batches of cell sentences: packed (flat token stream, no padding) or padded, plus sparse targets.

Pretraining targets are the 3 states of every (cell, bin) pair: 0 = closed (not open in the cell),
1 = in the cell's sentence, 2 = open in the cell but not in its sentence. State 2 has two sources:
bins removed by masking (``mask_fraction`` of each cell's open bins, the BERT-like objective) and, for
cells with more open bins than fit in ``max_length``, bins dropped by subsampling. Only the open pairs
(states 1 and 2) are stored (``target_cell``, ``target_bin``, ``target_state``); all others are 0.

Second (contrastive) views also carry the contrastive decoder's sparse targets (``view_target_*``):
state 1 = *added* (in the view's sentence but not open in the cell: borrowed from the neighbour),
state 2 = *dropped* (open in the cell but not in the view's sentence); every other (view, bin) pair is 0
(unchanged: the cell's own bin kept in the view, or closed in the cell and absent from the view).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..tokenize.sentences import DEFAULT_MAX_LENGTH, cell_sentence, sorted_unique
from ..tokenize.vocab import BinVocab

MISSING_LABEL = -1
#: label codes a batch carries by default (pretraining heads)
DEFAULT_LABEL_KEYS = ("cell_type", "organ")


@dataclass
class PackedBatch:
    """B cells as one flat token stream of T tokens (no padding); attention is block-diagonal."""

    input_ids: torch.Tensor  # (T,) int64 token ids, sentences concatenated
    cu_seqlens: torch.Tensor  # (B+1,) int32 sentence boundaries in the stream
    max_seqlen: int  # longest sentence
    cls_index: torch.Tensor  # (B,) int64 position of each <cls> in the stream
    eos_index: torch.Tensor  # (B, R) int64 position of each region's <eos> in the stream (R = vocab.n_eos)
    target_cell: torch.Tensor  # (N,) int64 cell of each open (cell, bin) pair
    target_bin: torch.Tensor  # (N,) int64 global bin id
    target_state: torch.Tensor  # (N,) int64 in {1 in sentence, 2 open but removed}
    labels: dict[str, torch.Tensor]  # label column -> (B,) int64 class codes, -1 = missing
    view_cls_index: torch.Tensor | None = None  # (B,) <cls> of each cell's second (contrastive) view
    view_eos_index: torch.Tensor | None = None  # (B, R) the second views' <eos>
    view_target_cell: torch.Tensor | None = None  # (M,) cell of each added/dropped (view, bin) pair
    view_target_bin: torch.Tensor | None = None  # (M,) global bin id
    view_target_state: torch.Tensor | None = None  # (M,) 1 = added from the neighbour, 2 = dropped
    batch_label: torch.Tensor | None = None  # (B,) int64 sample/batch code (integration), -1 = missing

    @property
    def num_cells(self) -> int:
        return int(self.cls_index.shape[0])

    def label(self, column: str) -> torch.Tensor:
        """(B,) codes of label ``column``; all -1 (missing) when the batch does not carry it."""
        codes = self.labels.get(column)
        return codes if codes is not None else torch.full((self.num_cells,), MISSING_LABEL, dtype=torch.int64)

    @property
    def cell_type(self) -> torch.Tensor:
        """``label("cell_type")`` (read-only, for old callers)."""
        return self.label("cell_type")

    @property
    def organ(self) -> torch.Tensor:
        """``label("organ")`` (read-only, for old callers)."""
        return self.label("organ")

    @property
    def num_sentences(self) -> int:
        """B, or 2B when the batch also holds a second view of every cell (after the B first views)."""
        return int(self.cu_seqlens.shape[0]) - 1

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.cu_seqlens[-1])

    @property
    def seqlens(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def _map(self, fn):
        def apply(value):
            if isinstance(value, torch.Tensor):
                return fn(value)
            return {k: fn(v) for k, v in value.items()} if isinstance(value, dict) else value

        return type(self)(**{f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device: torch.device | str, *, non_blocking: bool = False):
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        return self._map(lambda t: t.pin_memory())


@dataclass
class PaddedBatch(PackedBatch):
    """The same cells padded to (B, L). ``cls_index``/``eos_index`` index the flattened (B*L) stream,
    so everything downstream of the encoder is shared with :class:`PackedBatch`."""

    attention_mask: torch.Tensor = None  # (B, L) bool, True = real token


def mask_bins(open_bins: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Keep ``round((1 - fraction) * n)`` of the sorted ``open_bins`` (uniform without replacement)."""
    n_mask = int(round(fraction * len(open_bins)))
    if n_mask == 0:
        return open_bins
    drop = rng.choice(len(open_bins), size=n_mask, replace=False)
    keep = np.ones(len(open_bins), dtype=bool)
    keep[drop] = False
    return open_bins[keep]


def _cell_tokens(cell: dict, vocab: BinVocab, mask_fraction: float, max_length: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sentence token ids, open bin ids, their states) of one cell."""
    open_bins = sorted_unique(cell["bin_ids"])
    kept = mask_bins(open_bins, mask_fraction, rng)
    sentence = cell_sentence(kept, vocab, max_length=max_length, rng=rng)
    in_sentence = vocab.token_to_bin(sentence)
    state = np.where(np.isin(open_bins, in_sentence[in_sentence >= 0], assume_unique=True), 1, 2)
    return sentence, open_bins, state


def contrastive_view(cell: dict, drop: float, neighbor_add: float, rng: np.random.Generator) -> np.ndarray:
    """Open bins of a second view of ``cell``: ``drop`` of its open bins removed at random, then (when
    the cell has ``neighbor_bin_ids``, one list per nearest neighbour) ``neighbor_add`` of the bins of
    one random neighbour that the cell lacks added (the design's augmentation). Sorted, unique."""
    own = sorted_unique(cell["bin_ids"])
    kept = mask_bins(own, drop, rng)
    neighbors = cell.get("neighbor_bin_ids")
    if neighbor_add > 0 and neighbors is not None and len(neighbors):
        other = np.asarray(neighbors[int(rng.integers(len(neighbors)))], dtype=np.int64)
        extra = np.setdiff1d(sorted_unique(other), own, assume_unique=True)
        extra = mask_bins(extra, 1.0 - neighbor_add, rng) if neighbor_add < 1 else extra
        kept = sorted_unique(np.concatenate([kept, extra]))
    return kept


def view_targets(cell: dict, sentence: np.ndarray, vocab: BinVocab) -> tuple[np.ndarray, np.ndarray]:
    """(bins, states) of one second view: 1 = in the view's ``sentence`` but not open in the cell (added),
    2 = open in the cell but not in the sentence (dropped, by the view or by the ``max_length`` cut)."""
    own = sorted_unique(cell["bin_ids"])
    shown = vocab.token_to_bin(sentence)
    shown = sorted_unique(shown[shown >= 0])
    added, dropped = np.setdiff1d(shown, own, assume_unique=True), np.setdiff1d(own, shown, assume_unique=True)
    return np.concatenate([added, dropped]), np.repeat(np.array([1, 2], dtype=np.int64), [len(added), len(dropped)])


def _views(cells: list[dict], rngs, vocab: BinVocab, drop: float, neighbor_add: float, max_length: int):
    """Sentences of the second views and their sparse targets (cell, bin, state)."""
    sentences, v_cell, v_bin, v_state = [], [], [], []
    for i, (cell, r) in enumerate(zip(cells, rngs, strict=False)):
        view = contrastive_view(cell, drop, neighbor_add, r)
        sentences.append(cell_sentence(view, vocab, max_length=max_length, rng=r))
        bins, states = view_targets(cell, sentences[-1], vocab)
        v_cell.append(np.full(len(bins), i, dtype=np.int64))
        v_bin.append(bins)
        v_state.append(states)
    targets = {f"view_target_{k}": torch.from_numpy(np.concatenate(v)) for k, v in
               (("cell", v_cell), ("bin", v_bin), ("state", v_state))}
    return sentences, targets


def _label(cell: dict, key: str) -> int:
    value = cell.get(key, MISSING_LABEL)
    return MISSING_LABEL if value is None else int(value)


def collate_cells(
    cells: list[dict],
    vocab: BinVocab,
    *,
    mask_fraction: float = 0.15,
    max_length: int = DEFAULT_MAX_LENGTH,
    rng: np.random.Generator | Sequence[np.random.Generator] | None = None,
    packed: bool = True,
    contrastive_drop: float | None = None,
    contrastive_neighbor_add: float = 0.0,
    label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
) -> PackedBatch | PaddedBatch:
    """Build a batch from cells ``{"bin_ids": open global bin ids, "cell_type": int, ...}``.

    ``label_keys``: the cells' label codes that travel in ``batch.labels`` (-1 or absent = missing).

    Each cell: ``mask_fraction`` of its open bins are removed (seeded by ``rng``; use 0 for inference),
    the rest form its sentence (subsampled to ``max_length`` tokens if longer); removed and
    subsampled-away bins get target state 2, bins in the sentence state 1. ``packed=False`` returns a
    :class:`PaddedBatch` of the same cells (same sentences for the same ``rng`` state).

    ``contrastive_drop`` (not None) appends a second view of every cell (:func:`contrastive_view`) as
    sentences B..2B-1 of the stream, with their ``<cls>``/``<eos>`` in ``view_cls_index``/``view_eos_index``
    and the contrastive decoder's added/dropped bins in ``view_target_*`` (:func:`view_targets`); targets,
    labels, ``cls_index`` and ``eos_index`` refer to the first views.

    ``rng`` may also be one generator per cell (inference seeds each cell from its own content, so a
    cell gets the same sentence whatever batch it is in).
    """
    if not cells:
        raise ValueError("collate_cells needs at least one cell")
    rng = np.random.default_rng() if rng is None else rng
    rngs = [rng] * len(cells) if isinstance(rng, np.random.Generator) else list(rng)
    if len(rngs) != len(cells):
        raise ValueError(f"got {len(rngs)} generators for {len(cells)} cells")
    sentences, targets = _first_views(cells, vocab, mask_fraction, max_length, rngs)
    views = {}
    if contrastive_drop is not None:
        view_sentences, views = _views(cells, rngs, vocab, contrastive_drop, contrastive_neighbor_add, max_length)
        sentences += view_sentences
    n = len(cells)
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    width = int(lengths.max()) if not packed else 0
    starts = np.arange(len(sentences)) * width if not packed else np.concatenate([[0], np.cumsum(lengths)[:-1]])
    eos_local = np.stack([np.flatnonzero(vocab.is_special(s))[1:] for s in sentences])  # (2B or B, R)
    if views:
        views["view_eos_index"] = torch.from_numpy(eos_local[n:] + starts[n:, None])
    common = dict(
        cu_seqlens=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
        max_seqlen=int(lengths.max()),
        cls_index=torch.from_numpy(starts[:n].astype(np.int64)),
        eos_index=torch.from_numpy(eos_local[:n] + starts[:n, None]),
        view_cls_index=torch.from_numpy(starts[n:].astype(np.int64)) if contrastive_drop is not None else None,
        **targets,
        labels={k: torch.tensor([_label(c, k) for c in cells], dtype=torch.int64) for k in label_keys},
        batch_label=torch.tensor([_label(c, "batch_label") for c in cells], dtype=torch.int64)
        if any("batch_label" in c for c in cells) else None,
        **views,
    )
    if packed:
        return PackedBatch(input_ids=torch.from_numpy(np.concatenate(sentences)), **common)
    return _padded(sentences, width, vocab.pad_id, common)


def _first_views(cells: list[dict], vocab: BinVocab, mask_fraction: float, max_length: int, rngs) -> tuple:
    """Each cell's masked sentence, and the decoder targets of all cells (``target_cell``/``_bin``/``_state``)."""
    sentences, t_cell, t_bin, t_state = [], [], [], []
    for i, cell in enumerate(cells):
        sentence, open_bins, state = _cell_tokens(cell, vocab, mask_fraction, max_length, rngs[i])
        sentences.append(sentence)
        t_cell.append(np.full(len(open_bins), i, dtype=np.int64))
        t_bin.append(open_bins)
        t_state.append(state)
    return sentences, {"target_cell": torch.from_numpy(np.concatenate(t_cell)),
                       "target_bin": torch.from_numpy(np.concatenate(t_bin)),
                       "target_state": torch.from_numpy(np.concatenate(t_state).astype(np.int64))}


def _padded(sentences: list[np.ndarray], width: int, pad_id: int, fields: dict) -> PaddedBatch:
    """The sentences padded to (n, width), with the other batch ``fields``."""
    ids = np.full((len(sentences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sentences), width), dtype=bool)
    for i, s in enumerate(sentences):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = True
    return PaddedBatch(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **fields)


def pad_batch(batch: PackedBatch, *, pad_id: int = 0) -> PaddedBatch:
    """The padded layout of a packed batch (same cells, same sentences, same targets)."""
    lengths = batch.seqlens.long()
    n, width = batch.num_sentences, int(lengths.max())
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, L)
    ids = torch.full((n, width), pad_id, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
    ids[mask.to(ids.device)] = batch.input_ids
    shift = (torch.arange(n, device=lengths.device) * width - batch.cu_seqlens[:-1].long()).to(batch.cls_index.device)
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(PackedBatch)}
    b = batch.num_cells
    fields.update(input_ids=ids, cls_index=batch.cls_index + shift[:b], eos_index=batch.eos_index + shift[:b, None])
    if batch.view_cls_index is not None:
        fields["view_cls_index"] = batch.view_cls_index + shift[b:]
    if batch.view_eos_index is not None:
        fields["view_eos_index"] = batch.view_eos_index + shift[b:, None]
    return PaddedBatch(**fields, attention_mask=mask.to(ids.device))
