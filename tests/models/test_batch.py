import numpy as np
import pytest
import torch

from atacformer.models import PackedBatch, PaddedBatch, collate_cells, pad_batch


def _dense_states(batch: PackedBatch, n_bins: int) -> np.ndarray:
    states = np.zeros((batch.num_cells, n_bins), dtype=np.int64)
    states[batch.target_cell.numpy(), batch.target_bin.numpy()] = batch.target_state.numpy()
    return states


def test_three_state_targets_match_brute_force(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 6, seed=3, low=5, high=30)
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.25, rng=np.random.default_rng(0))
    states = _dense_states(batch, toy_vocab.n_bins)
    cu = batch.cu_seqlens.tolist()
    for i, cell in enumerate(cells):
        sentence = batch.input_ids[cu[i]:cu[i + 1]].numpy()
        in_sentence = set(toy_vocab.token_to_bin(sentence[sentence >= toy_vocab.bin_offset]).tolist())
        open_bins = set(np.asarray(cell["bin_ids"]).tolist())
        n_removed = int(round(0.25 * len(open_bins)))
        assert len(in_sentence) == len(open_bins) - n_removed
        assert in_sentence <= open_bins
        for b in range(toy_vocab.n_bins):  # brute force over every (cell, bin)
            expected = 1 if b in in_sentence else 2 if b in open_bins else 0
            assert states[i, b] == expected, (i, b)
        # sentence layout: <cls>, bins in genomic order, <eos_c> closing each chromosome
        assert sentence[0] == toy_vocab.cls_id and batch.input_ids[batch.cls_index[i]] == toy_vocab.cls_id
        assert batch.input_ids[batch.eos_index[i]].tolist() == toy_vocab.eos_ids.tolist()
        bins = toy_vocab.token_to_bin(sentence[1:])
        assert np.all(np.diff(bins[bins >= 0]) > 0)


def test_subsampled_bins_are_state_two(toy_vocab):
    cells = [{"bin_ids": np.arange(30)}, {"bin_ids": np.array([1, 2])}]
    max_length = 1 + toy_vocab.n_chroms + 10
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.0, max_length=max_length, rng=np.random.default_rng(1))
    assert batch.seqlens.tolist() == [max_length, 1 + toy_vocab.n_chroms + 2]
    states = _dense_states(batch, toy_vocab.n_bins)
    assert (states[0, :30] == 1).sum() == 10 and (states[0, :30] == 2).sum() == 20
    assert (states[0, 30:] == 0).all()
    assert states[1].tolist().count(1) == 2 and 2 not in states[1]


def test_masking_is_seeded_and_off_for_inference(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 4, seed=1, low=8, high=20)
    a = collate_cells(cells, toy_vocab, rng=np.random.default_rng(5))
    b = collate_cells(cells, toy_vocab, rng=np.random.default_rng(5))
    c = collate_cells(cells, toy_vocab, rng=np.random.default_rng(6))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.target_state, b.target_state)
    assert not torch.equal(a.target_state, c.target_state)
    full = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    assert (full.target_state == 1).all()
    assert full.num_tokens == sum(len(c["bin_ids"]) for c in cells) + len(cells) * (1 + toy_vocab.n_chroms)


def test_one_generator_per_cell_makes_sentences_batch_independent(toy_vocab):
    """With a generator per cell (seeded from the cell), a subsampled cell gets the same sentence alone or
    in any batch; one shared generator makes it depend on its batch mates."""
    long = {"bin_ids": np.arange(0, 40)}
    others = [{"bin_ids": np.arange(3, 30)}, {"bin_ids": np.array([1, 5, 9])}]
    max_length = 1 + toy_vocab.n_chroms + 12

    def first_sentence(cells, rng):
        b = collate_cells(cells, toy_vocab, mask_fraction=0.0, max_length=max_length, rng=rng)
        return b.input_ids[: b.cu_seqlens[1]].tolist()

    alone = first_sentence([long], [np.random.default_rng(7)])
    rngs = [np.random.default_rng(7), np.random.default_rng(1), np.random.default_rng(2)]
    assert first_sentence([long, *others], rngs) == alone
    assert len(alone) == max_length
    assert first_sentence([long, others[0]], np.random.default_rng(7)) == alone  # a shared generator, drawn first
    mates_first = collate_cells([others[0], long], toy_vocab, mask_fraction=0.0, max_length=max_length,
                                rng=np.random.default_rng(7))
    second = mates_first.input_ids[mates_first.cu_seqlens[1]: mates_first.cu_seqlens[2]].tolist()
    assert second != alone  # with one shared generator the mate's draws come first
    own = collate_cells([others[0], long], toy_vocab, mask_fraction=0.0, max_length=max_length,
                        rng=[np.random.default_rng(1), np.random.default_rng(7)])
    assert own.input_ids[own.cu_seqlens[1]: own.cu_seqlens[2]].tolist() == alone  # its own generator: the same
    with pytest.raises(ValueError, match="2 generators for 3 cells"):
        collate_cells([long, *others], toy_vocab, rng=rngs[:2])


def test_padded_layout_holds_the_same_cells(toy_vocab, make_cells):
    cells = make_cells(toy_vocab, 5, seed=2)
    packed = collate_cells(cells, toy_vocab, rng=np.random.default_rng(0))
    padded = collate_cells(cells, toy_vocab, rng=np.random.default_rng(0), packed=False)
    assert isinstance(padded, PaddedBatch) and padded.input_ids.shape == (5, packed.max_seqlen)
    assert torch.equal(padded.input_ids[padded.attention_mask], packed.input_ids)
    flat = padded.input_ids.flatten()
    assert torch.equal(flat[padded.eos_index], packed.input_ids[packed.eos_index])
    assert torch.equal(flat[padded.cls_index], packed.input_ids[packed.cls_index])
    assert torch.equal(padded.target_state, packed.target_state)
    converted = pad_batch(packed)
    for name in ("input_ids", "attention_mask", "cls_index", "eos_index"):
        assert torch.equal(getattr(converted, name), getattr(padded, name)), name


def test_labels_and_errors(toy_vocab):
    cells = [{"bin_ids": [0, 3], "cell_type": 2}, {"bin_ids": [5], "organ": None}]
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    assert batch.cell_type.tolist() == [2, -1] and batch.organ.tolist() == [-1, -1]
    assert batch.to("cpu").num_cells == 2
    with pytest.raises(ValueError, match="bin ids must be in"):
        collate_cells([{"bin_ids": [toy_vocab.n_bins]}], toy_vocab)
    with pytest.raises(ValueError, match="at least one cell"):
        collate_cells([], toy_vocab)
