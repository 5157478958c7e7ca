"""The atacFormer model: embeddings → packed encoder → per-region 3-state decoder + <cls> heads (one per label
column, ``model.heads[column]``).

Decoders (``config.decoder``, see :mod:`atacformer.tokenize.vocab`): the ``<eos>`` outputs of the
sentence — one per chromosome, per region class or per chromosome × class — or learned cross-attention
queries (:mod:`.cross_decoder`) feed the 3-state decoder of the bins of their region (:mod:`.decoder`).

Contrastive decoder (``contrastive_decoder_weight > 0``): a second :class:`~.decoder.DecoderMLP` run by
the same decoder on the *second view's* region outputs predicts, for every (view, bin) pair, whether the
bin was added from the neighbour (1), dropped from the cell (2) or is unchanged (0) — the design's
"another decoder is responsible for predicting dropped/added tokens" — with the sparse targets the
batcher records (:func:`~.batch.view_targets`), the same class weights, chunking and closed-bin sampling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_path
from ..tokenize.vocab import BinVocab
from .attention import packed_context, padded_context
from .batch import PackedBatch, PaddedBatch
from .config import CONFIG_FILE, LEGACY_HEAD_FIELDS, AtacformerConfig
from .cross_decoder import CrossAttentionDecoder
from .decoder import DecoderMLP, StateDecoder
from .encoder import Encoder
from .heads import ClassifierHead, LabelHeads, ProjectionHead, head_key, info_nce, masked_cross_entropy

logger = logging.getLogger(__name__)
WEIGHTS_FILE = "model.safetensors"


@dataclass
class AtacformerOutput:
    loss: torch.Tensor | None  # () weighted sum of the parts below
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # "state", one per head column, "contrastive",
    # "contrastive_decoder"
    state_ce_sum: torch.Tensor | None = None  # (3,) cross-entropy summed per true state (see state_metrics)
    state_count: torch.Tensor | None = None  # (3,) (cell, bin) pairs per state
    state_hist: torch.Tensor | None = None  # (2, n) histogram of removed-vs-closed log-odds
    cell_embedding: torch.Tensor | None = None  # (B, d) encoder output at <cls>
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # per head column: (B, n_classes)
    hidden_states: torch.Tensor | None = None  # (T, d) packed, or (B*L, d) padded, on request

    @property
    def cell_type_logits(self) -> torch.Tensor | None:
        """``logits["cell_type"]`` or None (read-only, for old callers)."""
        return self.logits.get("cell_type")

    @property
    def organ_logits(self) -> torch.Tensor | None:
        """``logits["organ"]`` or None (read-only, for old callers)."""
        return self.logits.get("organ")


def rename_legacy_heads(state_dict: dict, prefix: str = "") -> dict:
    """Rename, in place, weights saved before heads were keyed by label column (``cell_type_head.*``,
    ``organ_head.*``) to the heads of the ``cell_type`` / ``organ`` columns; returns ``state_dict``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for slot in LEGACY_HEAD_FIELDS:
            old = f"{prefix}{slot}_head."
            if key.startswith(old):
                state_dict[f"{prefix}heads.{head_key(slot)}." + key[len(old):]] = state_dict.pop(key)
    return state_dict


def _legacy_head_keys(module, state_dict, prefix, *args) -> None:
    """Load pre-hook (checkpoints of old runs): :func:`rename_legacy_heads` under the module's prefix."""
    rename_legacy_heads(state_dict, prefix)


class Atacformer(nn.Module):
    """atacFormer (see ``docs``/README "model"): ``forward(batch)`` for pretraining, ``embed(batch)`` for cells.

    ``dna_embeddings``: optional frozen (vocab_size, dna_dim) table aligned to the vocabulary (zero rows
    for special tokens); it is stored as a buffer and saved with the model.
    """

    def __init__(self, config: AtacformerConfig, dna_embeddings: torch.Tensor | None = None, *,
                 attention: str = "auto"):
        super().__init__()
        self.config = config
        self.attention = attention  # "auto" | "flash" | "segments" | "flex" (packed batches)
        self.encoder = Encoder(config, dna_embeddings)
        if config.decoder_bins == "observed" and not 0 < config.n_decoder_bins <= config.n_bins:
            raise ValueError(f"decoder_bins='observed' needs 1 <= n_decoder_bins <= {config.n_bins}, "
                             f"got {config.n_decoder_bins} (pretrain sets it from the data)")
        self.decoder = _build_decoder(config, self.vocab)
        self.contrastive_decoder = DecoderMLP(config) if config.contrastive_decoder_weight > 0 else None
        self.heads = LabelHeads({col: self.new_head(len(names)) for col, names in config.heads.items()})
        self.register_load_state_dict_pre_hook(_legacy_head_keys)
        self.contrastive_head = (ProjectionHead(config.d_model, config.head_hidden, config.contrastive_dim)
                                 if config.contrastive_weight > 0 else None)

    def new_head(self, n_classes: int) -> ClassifierHead:
        """A fresh <cls> classifier of this model's sizes (on the model's device once attached)."""
        c = self.config
        return ClassifierHead(c.d_model, c.head_hidden, n_classes, c.dropout)

    def set_head(self, column: str, names: list[str]) -> None:
        """Predict ``column`` with classes ``names``: the existing head is kept when its classes are the same,
        else a fresh one replaces it; the config records the column and its class names."""
        names = [str(n) for n in names]
        if self.config.heads.get(column) != names or column not in self.heads:
            self.config.heads = {**self.config.heads, column: names}
            self.config.__post_init__()  # validates the column name and classes
            self.heads[column] = self.new_head(len(names)).to(self.device)

    # ------------------------------------------------------------------ properties
    @property
    def cell_type_head(self) -> ClassifierHead | None:
        """``heads["cell_type"]`` or None (read-only, for old callers)."""
        return self.heads.get("cell_type")

    @cached_property
    def vocab(self) -> BinVocab:
        return self.config.vocab()

    @property
    def bin_offset(self) -> int:
        return 2 + self.config.n_chroms

    @property
    def state_decoder(self) -> StateDecoder:
        """The 3-state decoder (of the cross-attention decoder too)."""
        return self.decoder.states if isinstance(self.decoder, CrossAttentionDecoder) else self.decoder

    def set_region_classes(self, codes) -> None:
        """Set the region class (0..K-1, K = ``len(config.region_classes)``) of every bin of the genome
        (``pretrain`` does this from the data; the codes are saved with the weights)."""
        self.state_decoder.set_regions(torch.from_numpy(self.vocab.bin_regions(codes)), self.vocab.n_regions)

    def num_parameters(self, *, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def check_data(self, uns, *, what: str = "data") -> None:
        """Raise ``ValueError`` if an AnnData's ``uns`` genome/bin size differ from the model's."""
        self.vocab.check_data(uns, what=what)

    # ------------------------------------------------------------------ forward
    def encode(self, batch: PackedBatch) -> torch.Tensor:
        """Hidden states: (T, d) for a packed batch, (B*L, d) for a padded one."""
        ids = batch.input_ids.to(self.device)
        if isinstance(batch, PaddedBatch):
            return self.encoder(ids, padded_context(batch.attention_mask.to(self.device))).flatten(0, 1)
        ctx = packed_context(batch.cu_seqlens, batch.max_seqlen, device=self.device, backend=self.attention)
        return self.encoder(ids, ctx)

    def forward(self, batch: PackedBatch, *, output_hidden_states: bool = False,
                state0_sample_rate: float | None = None) -> AtacformerOutput:
        """Pretraining forward: 3-state decoder loss over all bins plus the <cls> head losses, plus
        (``contrastive_weight`` > 0 and a batch with second views) InfoNCE between the two views' <cls>.

        ``state0_sample_rate`` overrides the config's closed-bin sampling rate for this call (the
        config's rate applies in training mode only; evaluation is exact by default)."""
        c = self.config
        self._check_batch(batch)
        h = self.encode(batch)  # (T, d)
        cls = h[batch.cls_index.to(h.device)]  # (B, d)
        bin_e1 = self.bin_embeddings()  # (n_dec_bins, k)
        dec = self.state_decoder(self.region_outputs(h, batch), bin_e1, batch.target_cell.to(h.device),
                                 batch.target_bin.to(h.device), batch.target_state.to(h.device),
                                 sample_rate=state0_sample_rate)
        out = AtacformerOutput(loss=None, losses={"state": dec.loss}, state_ce_sum=dec.state_ce_sum,
                               state_count=dec.state_count, state_hist=dec.state_hist, cell_embedding=cls,
                               hidden_states=h if output_hidden_states else None)
        loss = c.state_loss_weight * dec.loss
        for col, head in self.heads.items():
            out.logits[col] = head(cls)
            out.losses[col] = masked_cross_entropy(out.logits[col], batch.label(col))
            loss = loss + c.head_loss_weights.get(col, 1.0) * out.losses[col]
        if self.contrastive_head is not None and batch.view_cls_index is not None:
            view = h[batch.view_cls_index.to(h.device)]  # (B, d) <cls> of the second views
            out.losses["contrastive"] = info_nce(self.contrastive_head(cls), self.contrastive_head(view),
                                                 c.contrastive_temperature)
            loss = loss + c.contrastive_weight * out.losses["contrastive"]
        if self.contrastive_decoder is not None and batch.view_target_cell is not None:
            view = self.state_decoder(self.region_outputs(h, batch, view=True), bin_e1,
                                      batch.view_target_cell.to(h.device), batch.view_target_bin.to(h.device),
                                      batch.view_target_state.to(h.device), sample_rate=state0_sample_rate,
                                      mlp=self.contrastive_decoder)
            out.losses["contrastive_decoder"] = view.loss
            loss = loss + c.contrastive_decoder_weight * view.loss
        out.loss = loss
        return out

    def bin_embeddings(self) -> torch.Tensor:
        """E1 rows (n_dec_bins, k) of the decoder's bins."""
        e1 = self.encoder.embed.e1.weight[self.bin_offset : self.bin_offset + self.config.n_bins]
        return self.state_decoder.bin_embeddings(e1)

    def region_outputs(self, h: torch.Tensor, batch: PackedBatch, *, view: bool = False) -> torch.Tensor:
        """(B, R, d) what the decoder reads per region: the sentences' ``<eos>`` outputs, or the
        cross-attention queries over each sentence; ``view=True``: of the second views."""
        if not isinstance(self.decoder, CrossAttentionDecoder):
            index = batch.view_eos_index if view else batch.eos_index
            return h[index.to(h.device)]
        if isinstance(batch, PaddedBatch):
            h = h[batch.attention_mask.to(h.device).flatten()]  # (T, d) real tokens, stream order
        cu, n = batch.cu_seqlens.to(h.device).long(), batch.num_cells
        if view:
            return self.decoder.regions(h[int(cu[n]):], cu[n:] - cu[n])
        return self.decoder.regions(h, cu[: n + 1])

    def _check_batch(self, batch: PackedBatch) -> None:
        """The batch's sentences must be the vocabulary's, and class regions set."""
        eos = self.vocab.eos_ids
        first = batch.input_ids.flatten()[batch.eos_index[0].to(batch.input_ids.device)].cpu().numpy()
        if batch.eos_index.shape[1] != len(eos) or not np.array_equal(first, eos):
            raise ValueError(f"the batch's sentences hold other <eos> tokens ({batch.eos_index.shape[1]} per sentence) "
                             f"than this model's {self.config.decoder} decoder reads ({self.vocab.n_eos}): "
                             "collate with model.vocab")
        if self.config.region_classes and int(self.state_decoder.bin_region.min()) < 0:
            raise ValueError("the region classes of the bins are not set: pretrain sets them from the data "
                             "(or call model.set_region_classes(codes))")

    @torch.no_grad()
    def bin_state_logits(self, batch: PackedBatch, bin_ids) -> torch.Tensor:
        """(B, n, 3) state logits of the decoder bins ``bin_ids`` (global ids) for the cells of ``batch``."""
        self._check_batch(batch)
        dec = self.state_decoder
        bin_ids = torch.as_tensor(bin_ids, dtype=torch.long, device=self.device)
        columns = bin_ids if dec.all_bins else torch.searchsorted(dec.bins, bin_ids).clamp_(max=dec.n_bins - 1)
        if not bool((dec.bins[columns] == bin_ids).all()):
            raise ValueError("bin_ids must be bins of the decoder (model.state_decoder.bins)")
        h = self.encode(batch)
        return dec.logits(self.region_outputs(h, batch), self.bin_embeddings(), columns)

    def embed(self, batch: PackedBatch, *, pooling: str = "cls") -> torch.Tensor:
        """Cell embeddings (B, d): the <cls> output, or the mean over each sentence's tokens."""
        h = self.encode(batch)  # (T, d)
        if pooling == "cls":
            return h[batch.cls_index.to(h.device)]
        if pooling != "mean":
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        n = batch.num_cells  # second (contrastive) views, if any, follow the B cells and are left out
        lengths = batch.seqlens[:n].to(h.device).long()  # (B,)
        if isinstance(batch, PaddedBatch):
            mask = batch.attention_mask[:n].to(h.device).flatten()
            h = h[: mask.shape[0]]
            cell = torch.arange(batch.num_cells, device=h.device).repeat_interleave(batch.attention_mask.shape[1])
            h, cell = h[mask], cell[mask]
        else:
            h = h[: int(lengths.sum())]
            cell = torch.arange(batch.num_cells, device=h.device).repeat_interleave(lengths)  # (T,)
        summed = torch.zeros(batch.num_cells, h.shape[1], device=h.device, dtype=h.dtype).index_add_(0, cell, h)
        return summed / lengths[:, None].to(h.dtype)

    @property
    def device(self) -> torch.device:
        return self.encoder.embed.e1.weight.device

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` (incl. the DNA table) and ``vocab.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        self.vocab.save(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "genome": self.config.genome,
                                                 "bin_size": str(self.config.bin_size)})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu",
                        attention: str = "auto") -> Atacformer:
        """Load a model saved by :meth:`save_pretrained`. A truncated weights file, weights that do not match
        ``config.json`` or a corrupt ``vocab.json`` are a ``ValueError`` naming the file."""
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).exists():
                raise ValueError(f"{directory}: not an atacformer model directory (no {name})")
        config = AtacformerConfig.load(directory / CONFIG_FILE)
        if (directory / "vocab.json").exists():
            BinVocab.load(directory, genome=config.genome, bin_size=config.bin_size, decoder=config.decoder,
                          region_classes=config.region_classes)
        try:
            model = cls(config, attention=attention)
        except (TypeError, ValueError, RuntimeError, AssertionError) as err:
            raise ValueError(f"{directory / CONFIG_FILE}: cannot build a model from this config ({err})") from None
        state = rename_legacy_heads(_load_weights(directory / WEIGHTS_FILE, map_location))
        _check_weights(model, state, directory / WEIGHTS_FILE)
        return model.to(map_location)


def _load_weights(path: Path, map_location) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a ``ValueError`` naming it when it is truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(torch.device(map_location)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read the model weights (truncated or corrupt file: {err})") from None


def _check_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model``; names or shapes that differ from config.json are a ``ValueError``."""
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        raise ValueError(f"{path}: weights do not match config.json (shape in file vs config: {wrong[:3]}; "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}); was config.json edited?")
    model.load_state_dict(state, strict=True)


def _build_decoder(config: AtacformerConfig, vocab: BinVocab) -> StateDecoder | CrossAttentionDecoder:
    """The decoder of ``config.decoder``; with region classes the per-bin regions start unset (-1)."""
    regions = torch.zeros(vocab.n_bins, dtype=torch.long) if vocab.region_classes else \
        torch.from_numpy(vocab.bin_regions())
    if config.decoder == "cross-attention":
        decoder = CrossAttentionDecoder(config, regions, n_regions=vocab.n_regions)
        states = decoder.states
    else:
        decoder = states = StateDecoder(config, regions)
    if vocab.region_classes:
        states.bin_region.fill_(-1)
    return decoder
