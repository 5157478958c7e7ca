import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atacformer.genome import Genome
from atacformer.models import Atacformer, AtacformerConfig, collate_cells, pad_batch
from atacformer.tokenize import BinVocab


def _model(vocab, seed=0, **overrides):
    torch.manual_seed(seed)
    return Atacformer(AtacformerConfig.from_preset("tiny", vocab, dropout=0.0, **overrides)).eval()


def _batch(vocab, make_cells, n=5, seed=0, **kw):
    return collate_cells(make_cells(vocab, n, seed=seed), vocab, rng=np.random.default_rng(seed), **kw)


def test_output_shapes(toy_vocab, make_cells):
    model = _model(toy_vocab, n_cell_types=3, n_organs=2)
    batch = _batch(toy_vocab, make_cells)
    out = model(batch, output_hidden_states=True)
    d = model.config.d_model
    assert out.cell_embedding.shape == (5, d) and out.hidden_states.shape == (batch.num_tokens, d)
    assert out.cell_type_logits.shape == (5, 3) and out.organ_logits.shape == (5, 2)
    assert set(out.losses) == {"state", "cell_type", "organ"} and out.loss.ndim == 0
    assert out.state_count.sum() == 5 * toy_vocab.n_bins
    assert model.embed(batch).shape == (5, d) and model.embed(batch, pooling="mean").shape == (5, d)
    with pytest.raises(ValueError, match="pooling"):
        model.embed(batch, pooling="max")


def _reference_encoder(model, ids):
    """Plain single-sequence transformer, no packing machinery: ids (L,) → (L, d)."""
    enc, h = model.encoder, model.config.n_heads
    x = enc.embed(ids)
    for layer in enc.layers:
        q, k, v = layer.attn.qkv(layer.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(len(ids), h, -1).transpose(0, 1) for t in (q, k, v))  # (H, L, Dh)
        att = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v
        x = x + layer.attn.proj(att.transpose(0, 1).reshape(len(ids), -1))
        x = x + layer.ff2(F.gelu(layer.ff1(layer.ln2(x))))
    return enc.ln_f(x)


@pytest.mark.parametrize("backend", ["buckets", "segments", "nested", "flex"])
def test_packed_equals_per_cell_unpadded(toy_vocab, make_cells, backend):
    model = _model(toy_vocab)
    model.attention = backend
    batch = _batch(toy_vocab, make_cells, n=6, seed=3)
    with torch.no_grad():
        packed = model.encode(batch)  # (T, d)
        padded = model.encode(pad_batch(batch)).view(6, batch.max_seqlen, -1)
        cu = batch.cu_seqlens.tolist()
        for i in range(6):
            ref = _reference_encoder(model, batch.input_ids[cu[i]:cu[i + 1]])
            torch.testing.assert_close(packed[cu[i]:cu[i + 1]], ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(padded[i, : len(ref)], ref, atol=1e-5, rtol=0)


def test_padded_and_packed_losses_agree(toy_vocab, make_cells):
    model = _model(toy_vocab, n_cell_types=3)
    batch = _batch(toy_vocab, make_cells, seed=1)
    a, b = model(batch), model(pad_batch(batch))
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.embed(batch, pooling="mean"), model.embed(pad_batch(batch), pooling="mean"),
                               atol=1e-5, rtol=0)


def test_missing_labels_are_ignored(toy_vocab, make_cells):
    model = _model(toy_vocab, n_cell_types=3, n_organs=2, cell_type_loss_weight=2.0, organ_loss_weight=0.5)
    batch = _batch(toy_vocab, make_cells, n=4)
    batch.labels["cell_type"] = torch.tensor([2, -1, 0, -1])
    batch.labels["organ"] = torch.full((4,), -1)
    out = model(batch)
    ref = F.cross_entropy(out.cell_type_logits[[0, 2]], torch.tensor([2, 0]))
    torch.testing.assert_close(out.losses["cell_type"], ref)
    assert out.losses["organ"].item() == 0.0
    expected = out.losses["state"] + 2.0 * out.losses["cell_type"]
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    grads = [p.grad for p in model.heads["organ"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_save_load_round_trip(toy_vocab, make_cells, tmp_path):
    table = torch.randn(len(toy_vocab), 8)
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dna_dim=8, n_cell_types=3, dropout=0.0),
                       dna_embeddings=table).eval()
    assert torch.equal(model.encoder.embed.dna[: toy_vocab.n_special], torch.zeros(toy_vocab.n_special, 8))
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "vocab.json"}
    loaded = Atacformer.from_pretrained(tmp_path / "m")
    batch = _batch(toy_vocab, make_cells)
    a, b = model(batch), loaded(batch)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.cell_type_logits, b.cell_type_logits)
    assert torch.equal(model.embed(batch), loaded.embed(batch))
    assert loaded.vocab.genome.chrom_sizes == toy_vocab.genome.chrom_sizes
    assert torch.equal(loaded.encoder.embed.dna, model.encoder.embed.dna)


def test_wrong_genome_is_a_clear_error(toy_vocab, tmp_path):
    model = _model(toy_vocab)
    model.check_data({"genome": "toy", "bin_size": 5000})
    with pytest.raises(ValueError, match="genome 'hg38' with 5000 bp bins, but this is 'toy'"):
        model.check_data({"genome": "hg38", "bin_size": 5000})
    with pytest.raises(ValueError, match="1000 bp bins"):
        model.check_data({"genome": "toy", "bin_size": 1000})
    model.save_pretrained(tmp_path / "m")
    other = BinVocab(Genome.from_chrom_sizes({"chr1": 100_000}, name="other"), 5000)
    other.save(tmp_path / "m")  # a vocabulary that does not belong to this model
    with pytest.raises(ValueError, match="vocab.json: vocabulary is for genome 'other'"):
        Atacformer.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="not an atacformer model directory"):
        Atacformer.from_pretrained(tmp_path)


def test_dna_table_shape_is_checked(toy_vocab):
    cfg = AtacformerConfig.from_preset("tiny", toy_vocab, dna_dim=4)
    with pytest.raises(ValueError, match=r"shape \(10, 4\), expected \(vocab_size=45"):
        Atacformer(cfg, dna_embeddings=torch.zeros(10, 4))
    with pytest.raises(ValueError, match="dna_dim is 0"):
        Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab), dna_embeddings=torch.zeros(45, 4))


def test_config_json_round_trip_and_presets(toy_vocab, tmp_path):
    cfg = AtacformerConfig.from_preset("small", toy_vocab, n_cell_types=4, state0_sample_rate=0.1)
    assert (cfg.d_model, cfg.n_layers, cfg.k, cfg.vocab_size, cfg.n_chroms) == (256, 4, 64, 45, 3)
    path = cfg.save(tmp_path / "c.json")
    assert AtacformerConfig.load(path) == cfg
    assert AtacformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.vocab().n_bins == toy_vocab.n_bins
    base = AtacformerConfig.from_preset("base", toy_vocab)
    assert ((base.d_model, base.n_layers, base.n_heads, base.d_ff, base.k, base.max_length)
            == (512, 12, 8, 2048, 64, 5000))
    with pytest.raises(ValueError, match="unknown preset"):
        AtacformerConfig.from_preset("huge", toy_vocab)
    with pytest.raises(ValueError, match="unknown config field"):
        AtacformerConfig.from_preset("tiny", toy_vocab, d_modle=8)
    with pytest.raises(ValueError, match="not divisible"):
        AtacformerConfig.from_preset("tiny", toy_vocab, n_heads=3)
    (tmp_path / "bad.json").write_text('{"genome": "hg38",\n oops}')
    with pytest.raises(ValueError, match=r"bad.json:2: not valid JSON"):
        AtacformerConfig.load(tmp_path / "bad.json")


def test_short_training_on_hemato_lowers_the_loss(hemato):
    cells, vocab, types = hemato
    torch.manual_seed(0)
    cfg = AtacformerConfig.from_preset("tiny", vocab, n_cell_types=len(types), state0_sample_rate=0.005,
                                       decoder_chunk_size=32768, dropout=0.0)
    model = Atacformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(20):
        idx = rng.choice(len(cells), size=12, replace=False)
        batch = collate_cells([cells[i] for i in idx], vocab, rng=rng)
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append({k: v.item() for k, v in out.losses.items()})
    first = {k: np.mean([x[k] for x in losses[:5]]) for k in losses[0]}
    last = {k: np.mean([x[k] for x in losses[-5:]]) for k in losses[0]}
    assert last["state"] < 0.8 * first["state"], (first, last)
    assert last["cell_type"] < first["cell_type"], (first, last)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_gpu_bf16_flash_path_matches_fp32_segments(toy_vocab, make_cells):
    from atacformer.models.attention import flash_available

    model = _model(toy_vocab, n_cell_types=3).cuda()
    batch = _batch(toy_vocab, make_cells, n=8).to("cuda")
    with torch.no_grad():
        model.attention = "segments"
        ref = model.encode(batch)
        model.attention = "auto"
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model.encode(batch)
            out = model(batch)
    assert flash_available(torch.device("cuda")) or model.attention == "auto"
    torch.testing.assert_close(fast.float(), ref, atol=5e-2, rtol=5e-2)
    assert torch.isfinite(out.loss)


@pytest.mark.gpu
@gpu
def test_gpu_bf16_training_step(toy_vocab, make_cells):
    model = _model(toy_vocab, n_cell_types=3).cuda().train()
    batch = _batch(toy_vocab, make_cells, n=8).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)
