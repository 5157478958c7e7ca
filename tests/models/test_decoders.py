"""The decoder choice: region-class / class × chromosome <eos>, cross-attention queries, the contrastive decoder."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atacformer.models import Atacformer, AtacformerConfig, collate_cells, pad_batch
from atacformer.tokenize import BinVocab
from atacformer.tokenize.sentences import cell_sentence

CLASSES = ["promoter", "intron", "intergenic"]


def _codes(vocab: BinVocab) -> np.ndarray:
    return np.arange(vocab.n_bins) % len(CLASSES)  # (n_bins,) a class per bin


def _model(vocab: BinVocab, decoder: str, classes=CLASSES, seed: int = 0, **overrides) -> Atacformer:
    torch.manual_seed(seed)
    cfg = AtacformerConfig.from_preset("tiny", vocab, decoder=decoder, region_classes=list(classes), dropout=0.0,
                                       **overrides)
    model = Atacformer(cfg)
    if classes:
        model.set_region_classes(_codes(vocab))
    return model.eval()


def test_vocab_round_trip_with_classes(tmp_path, toy_vocab):
    v = toy_vocab.with_decoder("class-x-chromosome", CLASSES)
    assert len(v) == len(toy_vocab) + 3 * 3 and v.n_eos == v.n_regions == 9
    assert v.bin_to_token([0]).tolist() == toy_vocab.bin_to_token([0]).tolist()  # bin ids do not move
    assert v.eos_ids.tolist() == list(range(len(toy_vocab), len(v)))
    assert v.token_names()[-1] == "<eos_chr3:intergenic>" and v.token_to_bin(v.eos_ids).tolist() == [-1] * 9
    v.save(tmp_path)
    w = BinVocab.load(tmp_path)
    assert (w.decoder, w.region_classes, len(w)) == ("class-x-chromosome", CLASSES, len(v))
    assert np.array_equal(w.bin_regions(_codes(v)), np.repeat(np.arange(3), v.bins.n_bins_per_chrom) * 3 + _codes(v))
    with pytest.raises(ValueError, match="region classes"):
        BinVocab.load(tmp_path, decoder="class-x-chromosome", region_classes=["promoter", "other"])
    meta = json.loads((tmp_path / "vocab.json").read_text())  # a vocab.json from before the decoder choice
    for key in ("decoder", "region_classes"):
        meta.pop(key)
    meta["vocab_size"] = len(toy_vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(meta))
    assert BinVocab.load(tmp_path).decoder == "chromosome"
    with pytest.raises(ValueError, match="needs region classes"):
        toy_vocab.with_decoder("region-class")


@pytest.mark.parametrize("decoder", ["region-class", "cross-attention"])
def test_sentences_put_class_tokens_after_the_bins(toy_vocab, decoder):
    v = toy_vocab.with_decoder(decoder, CLASSES)
    bins = np.array([30, 2, 17])
    s = cell_sentence(bins, v)
    assert s[0] == v.cls_id and v.token_to_bin(s[1:4]).tolist() == [2, 17, 30]  # genomic order, as before
    assert s[4:].tolist() == v.eos_ids.tolist() == ([] if decoder == "cross-attention" else list(v.eos_ids))
    batch = collate_cells([{"bin_ids": bins}, {"bin_ids": np.array([5])}], v, mask_fraction=0.0)
    assert batch.eos_index.shape == (2, v.n_eos)


def test_class_regions_must_be_set_and_batches_must_match(toy_vocab, make_cells):
    cfg = AtacformerConfig.from_preset("tiny", toy_vocab, decoder="region-class", region_classes=CLASSES)
    model = Atacformer(cfg)
    batch = collate_cells(make_cells(model.vocab, 3), model.vocab, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="region classes of the bins are not set"):
        model(batch)
    model.set_region_classes(_codes(toy_vocab))
    assert torch.isfinite(model(batch).loss)
    chrom_batch = collate_cells(make_cells(toy_vocab, 3), toy_vocab, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="collate with model.vocab"):
        model(chrom_batch)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        model.set_region_classes(np.full(toy_vocab.n_bins, 3))


@pytest.mark.parametrize("decoder", ["region-class", "class-x-chromosome", "cross-attention"])
def test_save_load_restores_decoder_and_class_mismatch_is_an_error(tmp_path, toy_vocab, make_cells, decoder):
    model = _model(toy_vocab, decoder, contrastive_decoder_weight=1.0)
    cells = make_cells(model.vocab, 4)
    for c in cells:
        c["neighbor_bin_ids"] = [np.array([1, 7, 33])]
    batch = collate_cells(cells, model.vocab, rng=np.random.default_rng(1), contrastive_drop=0.5,
                          contrastive_neighbor_add=1.0)
    out = model(batch)
    model.save_pretrained(tmp_path)
    loaded = Atacformer.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder == decoder and loaded.config.region_classes == CLASSES
    assert torch.equal(loaded.state_decoder.bin_region, model.state_decoder.bin_region)
    again = loaded(batch)
    torch.testing.assert_close(again.loss, out.loss)
    assert set(again.losses) >= {"state", "contrastive_decoder"}
    meta = json.loads((tmp_path / "vocab.json").read_text())
    meta["region_classes"] = ["promoter", "exon", "intergenic"]
    (tmp_path / "vocab.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="region classes"):
        Atacformer.from_pretrained(tmp_path)


def test_old_model_folder_loads_as_chromosome_decoder(tmp_path, toy_vocab, make_cells):
    torch.manual_seed(0)
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0)).eval()
    model.save_pretrained(tmp_path)
    for name in ("config.json", "vocab.json"):  # as written before the decoder choice
        meta = json.loads((tmp_path / name).read_text())
        for key in ("decoder", "region_classes", "contrastive_decoder_weight"):
            meta.pop(key, None)
        (tmp_path / name).write_text(json.dumps(meta))
    loaded = Atacformer.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder == "chromosome" and loaded.vocab.n_eos == toy_vocab.n_chroms
    batch = collate_cells(make_cells(toy_vocab, 3), toy_vocab, rng=np.random.default_rng(0))
    torch.testing.assert_close(loaded(batch).loss, model(batch).loss)


def test_adata_with_other_class_set_is_refused(toy_vocab):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from atacformer.train.batcher import adata_cells

    model = _model(toy_vocab, "region-class")
    var = toy_vocab.bins.var()
    adata = ad.AnnData(sp.csr_matrix(np.eye(2, toy_vocab.n_bins, dtype=np.float32)), var=var,
                       uns=toy_vocab.bins.uns())
    adata.var["region_class"] = pd.Categorical(np.array(CLASSES)[_codes(toy_vocab)])
    assert len(adata_cells(adata, model)) == 2
    adata.var["region_class"] = pd.Categorical(np.where(_codes(toy_vocab) == 0, "exon", "intron"))
    with pytest.raises(ValueError, match="var\\['region_class'\\] has region classes"):
        adata_cells(adata, model)


@pytest.mark.parametrize("classes", [CLASSES, []])
def test_cross_attention_packed_equals_unpacked_inside_atacformer(toy_vocab, make_cells, classes):
    """Per-cell region outputs and bin logits: packed batch = padded batch = each cell alone."""
    model = _model(toy_vocab, "cross-attention", classes=classes)
    vocab = model.vocab
    cells = make_cells(vocab, 5, seed=3)
    batch = collate_cells(cells, vocab, rng=np.random.default_rng(0))
    bins = torch.arange(vocab.n_bins)
    with torch.no_grad():
        packed = model.region_outputs(model.encode(batch), batch)  # (B, R, d)
        padded_batch = pad_batch(batch)
        padded = model.region_outputs(model.encode(padded_batch), padded_batch)
        logits = model.bin_state_logits(batch, bins)  # (B, n_bins, 3)
        for i, cell in enumerate(cells):
            one = collate_cells([cell], vocab, rng=np.random.default_rng(0))
            one.input_ids = batch.input_ids[batch.cu_seqlens[i]: batch.cu_seqlens[i + 1]]  # same sentence
            one.cu_seqlens = torch.tensor([0, len(one.input_ids)], dtype=torch.int32)
            one.max_seqlen = len(one.input_ids)
            torch.testing.assert_close(model.region_outputs(model.encode(one), one)[0], packed[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.bin_state_logits(one, bins)[0], logits[i], atol=1e-5, rtol=1e-5)
    assert packed.shape == (5, vocab.n_regions, model.config.d_model)
    torch.testing.assert_close(padded, packed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(padded_batch).loss, model(batch).loss, atol=1e-5, rtol=1e-5)


def test_view_targets_by_brute_force(toy_vocab):
    """Added = in the view's sentence but not the cell's; dropped = the cell's but not in the view's sentence."""
    rng = np.random.default_rng(0)
    cells = [{"bin_ids": rng.choice(toy_vocab.n_bins, size=n, replace=False),
              "neighbor_bin_ids": [rng.choice(toy_vocab.n_bins, size=12, replace=False) for _ in range(2)]}
             for n in (3, 9, 20)]
    cells.append({"bin_ids": np.array([4, 5])})  # no neighbour: nothing added
    for packed in (True, False):
        batch = collate_cells(cells, toy_vocab, rng=np.random.default_rng(5), contrastive_drop=0.5,
                              contrastive_neighbor_add=0.7, max_length=1 + toy_vocab.n_chroms + 10, packed=packed)
        flat = batch.input_ids.flatten()
        got = {(int(c), int(b), int(s)) for c, b, s in
               zip(batch.view_target_cell, batch.view_target_bin, batch.view_target_state, strict=False)}
        want = set()
        n_added = 0
        for i, cell in enumerate(cells):
            start = int(batch.view_cls_index[i])
            length = int(batch.seqlens[len(cells) + i])
            shown = {int(t) - toy_vocab.bin_offset for t in flat[start: start + length].tolist()
                     if toy_vocab.bin_offset <= t < toy_vocab.bin_offset + toy_vocab.n_bins}
            own = set(cell["bin_ids"].tolist())
            want |= {(i, b, 1) for b in shown - own} | {(i, b, 2) for b in own - shown}
            n_added += len(shown - own)
            assert flat[batch.view_eos_index[i]].tolist() == toy_vocab.eos_ids.tolist()
        assert got == want and n_added > 0 and len(got) == len(batch.view_target_cell)


def test_contrastive_decoder_loss_by_brute_force(toy_vocab):
    """The contrastive decoder's loss: dense class-weighted cross-entropy of its own MLP on the second
    views' region outputs against the added (1) / dropped (2) / unchanged (0) states."""
    model = _model(toy_vocab, "region-class", contrastive_decoder_weight=2.0, state_class_weights=(1.0, 3.0, 5.0))
    vocab = model.vocab
    rng = np.random.default_rng(0)
    cells = [{"bin_ids": rng.choice(vocab.n_bins, size=10, replace=False),
              "neighbor_bin_ids": [rng.choice(vocab.n_bins, size=10, replace=False)]} for _ in range(3)]
    batch = collate_cells(cells, vocab, rng=np.random.default_rng(1), contrastive_drop=0.5,
                          contrastive_neighbor_add=1.0)
    out = model(batch)
    h = model.encode(batch)
    eos = h[batch.view_eos_index]  # (B, R, d)
    m = model.contrastive_decoder
    region = model.state_decoder.bin_region  # (n_bins,)
    pre = m.fc_eos(m.compress(eos))[:, region] + m.fc_bin(model.bin_embeddings())  # (B, n_bins, H)
    logits = m.out(F.gelu(pre))
    y = torch.zeros(3, vocab.n_bins, dtype=torch.long)
    y[batch.view_target_cell, batch.view_target_bin] = batch.view_target_state
    ref = F.cross_entropy(logits.reshape(-1, 3), y.flatten(), weight=torch.tensor([1.0, 3.0, 5.0]))
    torch.testing.assert_close(out.losses["contrastive_decoder"], ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.loss, out.losses["state"] + 2.0 * ref, atol=1e-5, rtol=1e-5)


def test_dna_table_of_the_chromosome_vocabulary_fits_a_class_model(toy_vocab):
    table = torch.randn(len(toy_vocab), 8)  # aligned to the chromosome vocabulary (same bin token ids)
    cfg = AtacformerConfig.from_preset("tiny", toy_vocab, decoder="region-class", region_classes=CLASSES, dna_dim=8)
    model = Atacformer(cfg, dna_embeddings=table)
    dna = model.encoder.embed.dna
    assert dna.shape == (len(model.vocab), 8) and dna[len(toy_vocab):].abs().sum() == 0
    torch.testing.assert_close(dna[toy_vocab.bin_offset: len(toy_vocab)], table[toy_vocab.bin_offset:])
