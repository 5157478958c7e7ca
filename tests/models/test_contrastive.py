"""The contrastive objective: two-view batches, InfoNCE, and weight 0 = the plain masked-bin model."""

import json

import numpy as np
import pytest
import torch

from atacformer.models import Atacformer, AtacformerConfig, collate_cells, pad_batch
from atacformer.models.batch import contrastive_view
from atacformer.models.config import RECIPE_FIELDS
from atacformer.models.heads import info_nce
from atacformer.train import BatchSettings, weights_digest


def _bins(vocab, sentence):
    b = vocab.token_to_bin(sentence)
    return set(b[b >= 0].tolist())


def test_two_view_batch_matches_brute_force(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 6, seed=4, low=10, high=30)
    neighbor = np.arange(30, 40)
    cells[0]["neighbor_bin_ids"] = [neighbor]
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.15, rng=np.random.default_rng(0),
                          contrastive_drop=0.4, contrastive_neighbor_add=1.0)
    plain = collate_cells(cells, toy_vocab, mask_fraction=0.15, rng=np.random.default_rng(0))
    n = len(cells)
    assert batch.num_cells == n and batch.num_sentences == 2 * n and batch.view_cls_index.shape == (n,)
    cu = batch.cu_seqlens.tolist()
    # first views, targets and labels are exactly those of a plain batch with the same seed
    assert torch.equal(batch.input_ids[: cu[n]], plain.input_ids)
    for f in ("cls_index", "eos_index", "target_cell", "target_bin", "target_state", "cell_type"):
        assert torch.equal(getattr(batch, f), getattr(plain, f)), f
    for i, cell in enumerate(cells):
        view = batch.input_ids[cu[n + i]:cu[n + i + 1]].numpy()
        assert batch.view_cls_index[i] == cu[n + i] and view[0] == toy_vocab.cls_id
        own = set(np.asarray(cell["bin_ids"]).tolist())
        extra = set(neighbor.tolist()) - own if i == 0 else set()
        got = _bins(toy_vocab, view)
        assert len(got & own) == len(own) - int(round(0.4 * len(own)))  # drop: exactly 40 % removed
        assert got - own == extra  # all of the neighbour's missing bins, nothing else
    # padded layout: the same sentences, the views' <cls> point at <cls> tokens
    padded = pad_batch(batch)
    assert padded.input_ids.shape[0] == 2 * n
    assert (padded.input_ids.flatten()[padded.view_cls_index] == toy_vocab.cls_id).all()
    assert torch.equal(padded.input_ids[padded.attention_mask], batch.input_ids)


def test_views_are_seeded(toy_vocab, make_cells):
    cell = make_cells(toy_vocab, 1, seed=1, low=15, high=16)[0]
    a = contrastive_view(cell, 0.5, 0.0, np.random.default_rng(3))
    assert np.array_equal(a, contrastive_view(cell, 0.5, 0.0, np.random.default_rng(3)))
    assert not np.array_equal(a, contrastive_view(cell, 0.5, 0.0, np.random.default_rng(4)))


def test_info_nce_prefers_matched_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    noisy = z + 0.1 * torch.randn(16, 8, generator=g)
    matched = info_nce(z, noisy, 0.1)
    shuffled = info_nce(z, noisy[torch.randperm(16, generator=g)], 0.1)
    assert matched < 0.1 < np.log(16) < shuffled
    # symmetric, and equal to the hand-written cross-entropy
    assert torch.allclose(info_nce(z, noisy, 0.1), info_nce(noisy, z, 0.1))
    zn, nn_ = torch.nn.functional.normalize(z, dim=1), torch.nn.functional.normalize(noisy, dim=1)
    logits = zn @ nn_.T / 0.1
    by_hand = -(torch.log_softmax(logits, 1).diag().mean() + torch.log_softmax(logits, 0).diag().mean()) / 2
    assert torch.allclose(matched, by_hand, atol=1e-6)


def test_weight_zero_reproduces_the_plain_loss(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 5, seed=2, low=5, high=25)
    torch.manual_seed(0)
    plain = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0)).eval()
    torch.manual_seed(0)
    off = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0, contrastive_weight=0.0)).eval()
    batch = collate_cells(cells, toy_vocab, rng=np.random.default_rng(0))
    two_view = collate_cells(cells, toy_vocab, rng=np.random.default_rng(0), contrastive_drop=0.5)
    ref = plain(batch)
    assert torch.equal(off(two_view).loss, ref.loss) and set(off(two_view).losses) == {"state"}
    # weight > 0: the same state loss plus weight × InfoNCE of the projected <cls> pairs
    torch.manual_seed(0)
    on = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0, contrastive_weight=0.5)).eval()
    out = on(two_view)
    assert torch.allclose(out.losses["state"], ref.losses["state"])
    assert torch.allclose(out.loss, out.losses["state"] + 0.5 * out.losses["contrastive"])
    assert torch.allclose(on(pad_batch(two_view)).loss, out.loss, atol=1e-5)
    out.loss.backward()
    assert on.contrastive_head.net[0].weight.grad.abs().sum() > 0


def test_bad_contrastive_settings_are_rejected(toy_vocab):
    with pytest.raises(ValueError, match="contrastive"):
        AtacformerConfig.from_preset("tiny", toy_vocab, contrastive_temperature=0.0)
    # how the views are made is a recipe setting now, checked there
    with pytest.raises(ValueError, match="unknown config field"):
        AtacformerConfig.from_preset("tiny", toy_vocab, contrastive_drop=0.5)
    with pytest.raises(ValueError, match="contrastive_drop"):
        BatchSettings(contrastive_drop=1.0)
    with pytest.raises(ValueError, match="neighbor_add"):
        BatchSettings(contrastive_drop=0.5, neighbor_add=1.5)
    with pytest.raises(ValueError, match="mask_fraction"):
        BatchSettings(mask_fraction=1.0)


def test_batch_settings_make_the_two_view_batch(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 4, seed=5, low=8, high=20)
    settings = BatchSettings(mask_fraction=0.2, contrastive_drop=0.5)
    batch = settings.collate(cells, toy_vocab, np.random.default_rng(2), max_length=512)
    direct = collate_cells(cells, toy_vocab, mask_fraction=0.2, rng=np.random.default_rng(2), contrastive_drop=0.5)
    assert batch.num_sentences == 8 and torch.equal(batch.input_ids, direct.input_ids)
    assert BatchSettings().collate(cells, toy_vocab, np.random.default_rng(2), max_length=512).view_cls_index is None


def test_config_saved_with_recipe_fields_still_loads(toy_vocab, tmp_path):
    """Models saved before the recipe split have mask_fraction, contrastive_drop, ... in config.json."""
    torch.manual_seed(0)
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, contrastive_weight=1.0))
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    old = json.loads(path.read_text())
    old.update({"mask_fraction": 0.2, "contrastive_drop": 0.5, "contrastive_neighbor_add": 1.0,
                "contrastive_neighbors": "spectral", "contrastive_n_neighbors": 10, "e1_init": "svd"})
    assert set(old) >= RECIPE_FIELDS
    path.write_text(json.dumps(old))
    loaded = Atacformer.from_pretrained(tmp_path / "m")
    assert weights_digest(loaded) == weights_digest(model) and loaded.config == model.config
    assert not any(hasattr(loaded.config, f) for f in RECIPE_FIELDS)
    # any other unknown field is still an error naming it
    path.write_text(json.dumps({**old, "n_wings": 2}))
    with pytest.raises(ValueError, match="n_wings"):
        Atacformer.from_pretrained(tmp_path / "m")


def test_embedding_ignores_the_second_views(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 4, seed=6, low=5, high=20)
    torch.manual_seed(0)
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0, contrastive_weight=1.0)).eval()
    plain = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    views = collate_cells(cells, toy_vocab, mask_fraction=0.0, rng=np.random.default_rng(1), contrastive_drop=0.5)
    for pooling in ("cls", "mean"):
        ref = model.embed(plain, pooling=pooling)
        assert torch.allclose(model.embed(views, pooling=pooling), ref, atol=1e-5)
        assert torch.allclose(model.embed(pad_batch(views), pooling=pooling), ref, atol=1e-5)
