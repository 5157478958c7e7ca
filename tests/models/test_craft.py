"""CRAFT network: forward/backward, losses, persistence, and that it learns a toy paired problem."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from atacformer.metrics.alignment import foscttm
from atacformer.models import Atacformer, AtacformerConfig, collate_cells
from atacformer.models.craft import CraftConfig, CraftModel, batch_foscttm, clip_loss, nb_nll
from atacformer.models.rna import RnaEncoderConfig

N_TYPES, N_GENES = 4, 20


def toy_pairs(vocab, n, seed=0):
    """Cells of 4 types: ATAC opens 6 of its type's 8 bins (+2 random), RNA expresses its type's 5 genes."""
    rng = np.random.default_rng(seed)
    types = rng.integers(N_TYPES, size=n)
    cells, counts = [], np.zeros((n, N_GENES), dtype=np.float32)
    for i, t in enumerate(types):
        own = rng.choice(np.arange(8 * t, 8 * t + 8), 6, replace=False)
        cells.append({"bin_ids": np.unique(np.r_[own, rng.integers(32, vocab.n_bins, 2)])})
        rate = np.full(N_GENES, 0.3)
        rate[5 * t:5 * t + 5] = 6.0
        counts[i] = rng.poisson(rate)
    return cells, torch.from_numpy(counts), types


def make_model(vocab, **kwargs):
    torch.manual_seed(0)
    atac = Atacformer(AtacformerConfig.from_preset("tiny", vocab, dropout=0.0))
    rna = kwargs.pop("rna", RnaEncoderConfig(kind="mlp", d_model=32, d_ff=32, dropout=0.0))
    config = CraftConfig(rna=rna, shared_dim=16, proj_hidden=32, impute_hidden=32, **kwargs)
    return CraftModel(atac, [f"g{i}" for i in range(N_GENES)], config)


@pytest.mark.parametrize("likelihood", ["nb", "poisson", "mse"])
def test_forward_backward_reaches_every_part(toy_vocab, likelihood):
    model = make_model(toy_vocab, likelihood=likelihood, mask_weight=0.5)
    cells, counts, _ = toy_pairs(toy_vocab, 8)
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.15, rng=np.random.default_rng(0))
    out = model(batch, counts)
    assert set(out.losses) == {"contrastive", "impute", "state"}
    want = out.losses["contrastive"] + out.losses["impute"] + 0.5 * out.losses["state"]
    assert torch.allclose(out.loss, want)
    assert out.atac_emb.shape == out.rna_emb.shape == (8, 16)
    assert torch.allclose(out.atac_emb.norm(dim=-1), torch.ones(8), atol=1e-5)
    out.loss.backward()
    for part in (model.atac.encoder, model.rna, model.proj_atac, model.proj_rna, model.impute_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.logit_scale.grad is not None
    assert (model.log_theta.grad is not None and model.log_theta.grad.abs().sum() > 0) == (likelihood == "nb")
    imputed = model.impute(collate_cells(cells, toy_vocab, mask_fraction=0.0))
    assert imputed.shape == (8, N_GENES) and (imputed >= 0).all()


def test_without_mask_weight_only_the_encoder_runs_and_shapes_are_checked(toy_vocab):
    model = make_model(toy_vocab)
    cells, counts, _ = toy_pairs(toy_vocab, 4)
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    assert set(model(batch, counts).losses) == {"contrastive", "impute"}
    with pytest.raises(ValueError):  # the ATAC model's genome is checked
        model.check_data({"genome": "mm10", "bin_size": 5000})
    model.check_data({"genome": "toy", "bin_size": 5000})
    with pytest.raises(ValueError, match=r"rna_counts is \(3, 20\), expected \(4, 20\)"):
        model(batch, counts[:3])


def test_logit_scale_is_clamped_like_clip(toy_vocab):
    model = make_model(toy_vocab)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == pytest.approx(100.0)


def test_clip_loss_is_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    logits = 10 * a @ b.T
    want = 0.5 * (-logits.log_softmax(1).diag().mean() - logits.log_softmax(0).diag().mean())
    assert torch.allclose(clip_loss(a, b, torch.tensor(10.0)), want, atol=1e-6)
    assert clip_loss(a, a, torch.tensor(50.0)) < clip_loss(a, b, torch.tensor(50.0))


def test_nb_nll_matches_scipy():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3, size=(5, 7)).astype(np.float64)
    mu = rng.gamma(2.0, 2.0, size=(5, 7))
    theta = rng.gamma(2.0, 1.0, size=7)
    want = -stats.nbinom.logpmf(counts, theta, theta / (theta + mu)).mean()
    got = nb_nll(torch.tensor(counts), torch.tensor(mu), torch.tensor(np.log(theta)))
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "tokens"])
def test_save_load_round_trip_gives_identical_outputs(toy_vocab, tmp_path, kind):
    rna = RnaEncoderConfig(kind=kind, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_genes=8, dropout=0.0)
    model = make_model(toy_vocab, rna=rna, likelihood="poisson").eval()
    if kind == "tokens":
        model.rna.set_gene_scale(np.linspace(0.5, 2.0, N_GENES))
    cells, counts, _ = toy_pairs(toy_vocab, 5)
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    model.save_pretrained(tmp_path / "craft")
    assert ({"craft_config.json", "genes.json", "craft.safetensors", "atac"}
            <= {p.name for p in (tmp_path / "craft").iterdir()})
    assert (tmp_path / "craft" / "atac" / "vocab.json").exists()
    loaded = CraftModel.from_pretrained(tmp_path / "craft").eval()
    assert loaded.genes == model.genes and loaded.config == model.config
    with torch.no_grad():
        for f in ("embed_rna", "impute", "embed_atac"):
            x = counts if f == "embed_rna" else batch
            assert torch.equal(getattr(model, f)(x), getattr(loaded, f)(x)), f
    with pytest.raises(ValueError, match="not a CRAFT model directory"):
        CraftModel.from_pretrained(tmp_path / "craft" / "atac")


def test_save_load_with_a_local_hugging_face_rna_model(toy_vocab, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    src = tmp_path / "rna_bert"
    src.mkdir()
    (src / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                              *[f"g{i}" for i in range(N_GENES)]]))
    BertTokenizer(str(src / "vocab.txt")).save_pretrained(src)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=N_GENES + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(src)
    model = make_model(toy_vocab, rna=RnaEncoderConfig(kind="hf", model_dir=str(src), max_genes=8)).eval()
    with torch.no_grad():
        model.rna.backbone.embeddings.word_embeddings.weight.mul_(2.0)  # "fine-tuned": differs from src
    _, counts, _ = toy_pairs(toy_vocab, 4)
    model.save_pretrained(tmp_path / "craft")
    loaded = CraftModel.from_pretrained(tmp_path / "craft").eval()
    assert loaded.config.rna.model_dir == str(tmp_path / "craft" / "rna_model")
    with torch.no_grad():
        assert torch.equal(model.embed_rna(counts), loaded.embed_rna(counts))


def test_loss_decreases_on_a_toy_paired_problem(toy_vocab):
    model = make_model(toy_vocab, likelihood="nb")
    cells, counts, types = toy_pairs(toy_vocab, 32, seed=3)
    batch = collate_cells(cells, toy_vocab, mask_fraction=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch, counts)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert model(batch, counts).losses["contrastive"] < math.log(32) - 1.0  # well below chance (log B)
    model.eval()
    with torch.no_grad():  # each ATAC profile's nearest RNA profile is of its own type
        sim = model.embed_atac(batch) @ model.embed_rna(counts).T
    assert (types[sim.argmax(1).numpy()] == types).mean() > 0.9
    with torch.no_grad():  # imputation separates the types: own-type genes imputed higher
        imp = model.impute(batch).numpy()
    own = np.array([imp[i, 5 * t:5 * t + 5].mean() for i, t in enumerate(types)])
    other = np.array([np.delete(imp[i], np.s_[5 * t:5 * t + 5]).mean() for i, t in enumerate(types)])
    assert (own > other).mean() > 0.9


def test_batch_foscttm_matches_the_metric_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=-1)
    y = torch.nn.functional.normalize(x + 0.8 * torch.randn(40, 8, generator=g), dim=-1)
    got = float(batch_foscttm(x @ y.T))
    assert got == pytest.approx(foscttm(x.numpy(), y.numpy())["mean"], abs=1e-6)
    assert 0.0 < got < 0.5
    assert float(batch_foscttm(x @ x.T)) == 0.0  # every partner is its own nearest
