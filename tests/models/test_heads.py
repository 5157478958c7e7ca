"""<cls> heads keyed by label column: any number and any name, missing labels ignored, old models load."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from atacformer.models import Atacformer, AtacformerConfig, collate_cells
from atacformer.models.config import legacy_heads

HEADS = {"cell_type": ["A", "B", "C"], "assay": ["ATAC", "DNase"], "type": ["x", "y"], "a.b": ["p", "q", "r", "s"]}


def _model(vocab, **kw):
    torch.manual_seed(0)
    return Atacformer(AtacformerConfig.from_preset("tiny", vocab, dropout=0.0, **kw))


def _cells(vocab, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"bin_ids": rng.choice(vocab.n_bins, 8, replace=False)} for _ in range(n)]


def test_one_head_per_label_column_with_any_name(toy_vocab):
    model = _model(toy_vocab, heads=HEADS, head_loss_weights={"assay": 0.5})
    assert list(model.heads) == list(HEADS) and "a.b" in model.heads and "organ" not in model.heads
    cells = _cells(toy_vocab, 4)
    codes = {"cell_type": [0, 2, -1, 1], "assay": [-1, -1, -1, -1], "type": [1, 0, 1, 0], "a.b": [3, -1, 0, 2]}
    for i, c in enumerate(cells):
        c.update({col: v[i] for col, v in codes.items()})
    batch = collate_cells(cells, toy_vocab, rng=np.random.default_rng(0), label_keys=list(HEADS))
    out = model(batch)
    assert {col: out.logits[col].shape for col in HEADS} == {c: (4, len(n)) for c, n in HEADS.items()}
    # missing labels are ignored: the loss is the cross-entropy over the labelled rows only
    ref = F.cross_entropy(out.logits["cell_type"][[0, 1, 3]], torch.tensor([0, 2, 1]))
    torch.testing.assert_close(out.losses["cell_type"], ref)
    assert out.losses["assay"].item() == 0.0  # no labelled row at all
    expected = out.losses["state"] + out.losses["cell_type"] + 0.5 * out.losses["assay"] + out.losses["type"] \
        + out.losses["a.b"]
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()  # every head stays in the graph (DDP), with finite gradients
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.heads["assay"].parameters())
    assert model.heads["assay"].net[-1].weight.grad.abs().sum() == 0
    # a column the batch does not carry counts as missing everywhere
    plain = collate_cells(_cells(toy_vocab, 2), toy_vocab, rng=np.random.default_rng(1))
    assert set(plain.labels) == {"cell_type", "organ"} and model(plain).losses["type"].item() == 0.0


def test_heads_round_trip_and_set_head(toy_vocab, tmp_path):
    model = _model(toy_vocab, heads=HEADS).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = Atacformer.from_pretrained(tmp_path / "m")
    assert loaded.config.heads == HEADS
    x = torch.randn(3, model.config.d_model)
    for col in HEADS:
        torch.testing.assert_close(loaded.heads[col](x), model.heads[col](x))
    kept = model.heads["assay"]
    model.set_head("assay", ["ATAC", "DNase"])  # same classes: the trained head stays
    assert model.heads["assay"] is kept
    model.set_head("assay", ["ATAC", "ChIP", "DNase"])  # other classes: a fresh head
    assert model.heads["assay"] is not kept and model.heads["assay"].net[-1].out_features == 3
    model.set_head("tissue", ["liver", "lung"])
    assert list(model.config.heads) == [*HEADS, "tissue"] and "tissue" in model.heads


def test_bad_head_names_and_classes(toy_vocab):
    with pytest.raises(ValueError, match="cannot name a head"):
        AtacformerConfig.from_preset("tiny", toy_vocab, heads={"state": ["a", "b"]})
    with pytest.raises(ValueError, match="distinct class names"):
        AtacformerConfig.from_preset("tiny", toy_vocab, heads={"assay": ["a", "a"]})
    with pytest.raises(ValueError, match="without a head"):
        AtacformerConfig.from_preset("tiny", toy_vocab, head_loss_weights={"assay": 2.0})
    with pytest.raises(ValueError, match="cell_type_names must have n_cell_types=3"):
        legacy_heads({"n_cell_types": 3, "cell_type_names": ["a", "b"]})


def test_models_saved_with_cell_type_and_organ_heads_still_load(toy_vocab, tmp_path, make_cells):
    """A directory written before heads were keyed by column: config fields n_cell_types/cell_type_names/
    n_organs/organ_loss_weight, weights cell_type_head.* / organ_head.*."""
    new = _model(toy_vocab, heads={"cell_type": ["T", "B", "NK"], "organ": ["0", "1"]},
                 head_loss_weights={"organ": 0.5}).eval()
    new.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("heads", "head_loss_weights"):
        del cfg[key]
    cfg.update(n_cell_types=3, cell_type_names=["T", "B", "NK"], n_organs=2, organ_names=[],
               cell_type_loss_weight=1.0, organ_loss_weight=0.5, mask_fraction=0.15)
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(tmp_path / "old" / "model.safetensors"))
    state = {k.replace("heads.col_cell_type.", "cell_type_head.").replace("heads.col_organ.", "organ_head."): v
             for k, v in state.items()}
    assert any(k.startswith("cell_type_head.") for k in state) and not any(k.startswith("heads.") for k in state)
    save_file(state, str(tmp_path / "old" / "model.safetensors"))
    old = Atacformer.from_pretrained(tmp_path / "old")
    assert old.config.heads == {"cell_type": ["T", "B", "NK"], "organ": ["0", "1"]}
    assert old.config.head_loss_weights == {"organ": 0.5}
    assert old.config.cell_type_names == ["T", "B", "NK"] and old.config.n_cell_types == 3  # read-only aliases
    batch = collate_cells(make_cells(toy_vocab, 4), toy_vocab, rng=np.random.default_rng(0))
    a, b = new(batch), old(batch)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.logits["organ"], b.logits["organ"])
    assert old.cell_type_head is old.heads["cell_type"] and torch.equal(b.cell_type_logits, b.logits["cell_type"])
