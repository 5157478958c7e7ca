"""Batching, reproducible streams, rank/worker splits, optimiser groups and the LR schedule."""

import numpy as np
import pytest
import torch

from atacformer.genome import BinIndex
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.tokenize import BinVocab, write_corpus
from atacformer.train import AtacformerDataModule, DataSettings, parameter_groups, warmup_cosine
from atacformer.train.stream import group_cells, sentence_length


def _cells(lengths):
    return [{"bin_ids": np.arange(n), "row": i} for i, n in enumerate(lengths)]


def test_token_budget_packs_until_full_and_keeps_every_cell():
    lengths = [5, 30, 12, 40, 3, 3, 60, 1]
    groups = list(group_cells(iter(_cells(lengths)), n_chroms=2, max_length=50, max_tokens=50, batch_size=None))
    assert [c["row"] for g in groups for c in g] == list(range(len(lengths)))  # order kept, nothing lost
    for g in groups:
        tokens = sum(sentence_length(c, 2, 50) for c in g)
        assert tokens <= 50 or len(g) == 1
    # greedy: the next cell would not have fitted into the previous batch
    for g, nxt in zip(groups, groups[1:], strict=False):
        assert sum(sentence_length(c, 2, 50) for c in g) + sentence_length(nxt[0], 2, 50) > 50
    by_cells = list(group_cells(iter(_cells(lengths)), n_chroms=2, max_length=50, max_tokens=None, batch_size=3))
    assert [len(g) for g in by_cells] == [3, 3, 2]
    with pytest.raises(ValueError, match="exactly one"):
        list(group_cells(iter([]), n_chroms=2, max_length=50, max_tokens=10, batch_size=3))


def _ids(batches):
    return [b.input_ids.tolist() for b in batches]


def test_resumed_stream_skips_exactly_the_used_batches(make_toy):
    """With 2 workers, a stream told to skip k batches continues exactly where the first left off."""
    dm = AtacformerDataModule(make_toy(40), data=DataSettings(batch_size=4, val_fraction=0.0, num_workers=2), seed=3)
    dm.setup("fit")
    full = dm.train_dataloader()
    first = []
    for b in full:
        first.append(b)
        if len(first) == 14:  # more than one epoch (9 batches) of the 36 training cells
            break
    dm.skip_batches = 5
    resumed = []
    for b in dm.train_dataloader():
        resumed.append(b)
        if len(resumed) == 9:
            break
    assert _ids(resumed) == _ids(first[5:])
    # masks are seeded per batch: the same batch gets the same targets
    assert torch.equal(resumed[0].target_state, first[5].target_state)
    assert dm._n_workers(True) == 2


def test_anndata_ranks_and_val_split_are_disjoint(make_toy):
    adata = make_toy(50)
    seen = {}
    for rank in (0, 1):
        dm = AtacformerDataModule(adata, data=DataSettings(batch_size=4, val_fraction=0.2), seed=1)
        dm.rank, dm.world_size = rank, 2
        dm.setup("fit")
        for epoch in (0, 1):
            seen[rank, epoch] = [c["row"] for c in dm._source(train=True)(epoch)]
        val = {c["row"] for c in dm._source(train=False)(0)}
    for epoch in (0, 1):  # every epoch the ranks split the training cells between them
        assert not set(seen[0, epoch]) & set(seen[1, epoch])
        assert sorted(seen[0, epoch] + seen[1, epoch]) == sorted(dm.train_idx.tolist())
    assert seen[0, 0] != seen[0, 1]  # reshuffled each epoch
    assert len(dm.val_idx) == 10 and not set(dm.val_idx.tolist()) & set(dm.train_idx.tolist())
    assert val <= set(dm.val_idx.tolist())


def test_corpus_ranks_read_different_shards_and_labels_are_merged(tmp_path, make_toy):
    a, b = make_toy(40, seed=1), make_toy(24, seed=2)
    b.obs_names = [f"b{i}" for i in range(b.n_obs)]
    b.obs["cell_type"] = b.obs["cell_type"].cat.rename_categories({"A": "C", "B": "A"})  # labels C, A
    write_corpus(a, tmp_path / "c1", cells_per_shard=10, row_group_size=10, progress=False)
    write_corpus(b, tmp_path / "c2", cells_per_shard=12, row_group_size=12, progress=False)
    dm = AtacformerDataModule([tmp_path / "c1", tmp_path / "c2"], data=DataSettings(batch_size=4))
    assert dm.label_names["cell_type"] == ["A", "B", "C"]
    ids = {}
    for rank in (0, 1):
        dm.rank, dm.world_size = rank, 2
        cells = list(dm._source(train=True)(0))
        ids[rank] = [c["cell_id"] for c in cells]
        for c in cells:  # codes remapped onto the union of label names
            src = b if c["cell_id"].startswith("b") else a
            assert dm.label_names["cell_type"][c["cell_type"]] == src.obs.loc[c["cell_id"], "cell_type"]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(list(a.obs_names) + list(b.obs_names))


def test_no_weight_decay_on_embeddings_norms_and_biases(toy):
    vocab = BinVocab.from_bins(BinIndex.from_uns(toy.uns))
    model = Atacformer(AtacformerConfig.from_preset("tiny", vocab, n_cell_types=2))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    norms = {f"{m}.{n}" for m, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)
             for n, _ in mod.named_parameters()}
    assert {"encoder.embed.e1.weight", "encoder.embed.e2.weight"} <= nd and norms and norms <= nd
    assert {n for n in names.values() if n.endswith("bias")} <= nd
    assert "encoder.layers.0.attn.qkv.weight" in d and "decoder.fc_bin.weight" in d
    assert not d & nd and len(d) + len(nd) == sum(1 for p in model.parameters() if p.requires_grad)


def test_warmup_then_cosine():
    f = [warmup_cosine(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1) for s in range(120)]
    assert f[0] < f[5] < f[9] < 1.0 and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # decays monotonically
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)
