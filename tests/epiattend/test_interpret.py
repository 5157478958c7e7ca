import numpy as np
import pandas as pd
import pytest
import torch

from atacformer.epiattend import EpiAttend, get_config
from atacformer.epiattend.interpret import add_baselines, attention_rows, gradient_x_input, link_auroc, summarize_links

SMALL = dict(seq_len=2048, stem_channels=8, seq_channels=12, epi_hidden=8, d_model=16, n_heads=2, key_size=8,
             n_layers=2, pos_features=8, crop=4, epi_channels=2, n_targets=2)


class LinearToy(torch.nn.Module):
    """y[b, t, n] = <W_seq[t, n], seq[b]> + <W_epi[t, n], epi[b]> + bias: gradient x input is exact."""

    def __init__(self, length=64, e=2, p=8, t=2, n=4):
        super().__init__()
        self.ws = torch.nn.Parameter(torch.randn(t, n, length, 4))
        self.we = torch.nn.Parameter(torch.randn(t, n, e, p))
        self.bias = torch.nn.Parameter(torch.randn(t, n))

    def forward(self, seq, epi):
        return torch.einsum("tnlc,blc->btn", self.ws, seq) + torch.einsum("tnep,bep->btn", self.we, epi) + self.bias


def test_gradient_x_input_is_complete_on_a_linear_model():
    toy = LinearToy()
    seq = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 64)), 4).float()
    epi = torch.rand(3, 2, 8)
    pos = torch.tensor([0, 2, 3])
    s, e = gradient_x_input(toy, seq, epi, position=pos, target=1)
    assert s.shape == (3, 64) and e.shape == (3, 2, 8)
    out = toy(seq, epi)[torch.arange(3), 1, pos]
    baseline = toy(torch.zeros_like(seq), torch.zeros_like(epi))[torch.arange(3), 1, pos]
    # completeness: attributions add up to f(x) - f(0), sample by sample
    assert torch.allclose(s.sum(1) + e.sum((1, 2)), out - baseline, atol=1e-4)
    # and per position equal the weight picked out by the one-hot base
    w = toy.ws[1, pos[0]]  # (L, 4)
    assert torch.allclose(s[0], (w * seq[0]).sum(-1), atol=1e-5)


def test_gradient_x_input_on_epiattend_respects_receptive_inputs():
    cfg = get_config("tiny", **SMALL)
    model = EpiAttend(cfg).eval()
    seq = torch.nn.functional.one_hot(torch.randint(0, 4, (2, cfg.seq_len)), 4).float()
    epi = torch.rand(2, 2, cfg.n_positions)
    epi[:, :, 3] = 0.0  # a zero input gets zero gradient x input
    s, e = gradient_x_input(model, seq, epi, position=2, target=0)
    assert s.shape == (2, cfg.seq_len) and e.shape == (2, 2, cfg.n_positions)
    assert (e[:, :, 3] == 0).all() and e.abs().sum() > 0
    # sequence-only model: no epigenome attribution
    seq_only = EpiAttend(get_config("tiny", **SMALL, mode="sequence")).eval()
    s2, e2 = gradient_x_input(seq_only, seq, None, position=2)
    assert e2 is None and s2.shape == (2, cfg.seq_len)


def test_attention_rows_sum_to_one_and_pick_the_query_row():
    cfg = get_config("tiny", **SMALL)
    model = EpiAttend(cfg).eval()
    seq = torch.nn.functional.one_hot(torch.randint(0, 4, (2, cfg.seq_len)), 4).float()
    epi = torch.rand(2, 2, cfg.n_positions)
    rows = attention_rows(model, seq, epi, position=1)
    assert rows.shape == (2, cfg.n_positions)
    assert torch.allclose(rows.sum(-1), torch.ones(2), atol=1e-5)
    _, maps = model(seq, epi, return_attention=True)
    want = torch.stack([m[:, :, 1 + cfg.crop] for m in maps]).mean(dim=(0, 2))
    assert torch.allclose(rows, want)


def test_baselines_and_auroc():
    links = pd.DataFrame({
        "gene": ["g"] * 6, "region": list("aabbcc"), "cell_type": ["x", "y"] * 3,
        "distance": [100, 100, -2000, -2000, 500, 500], "activity": [1.0, 3.0, 10.0, 10.0, 0.0, 2.0],
        "score": [0.1, 0.2, 0.9, 0.7, 0.0, 0.1], "attention": [0.2, 0.2, 0.1, 0.1, 0.3, 0.3],
    })
    out = add_baselines(links)
    assert out.distance_score.tolist() == [-100, -100, -2000, -2000, -500, -500]
    assert np.isclose(out.abc_score[0], 1.0 / 128) and np.isclose(out.abc_score[2], 10.0 / 2000)  # distance floor
    summ = summarize_links(out)
    assert len(summ) == 3 and np.isclose(summ.set_index("region").score["b"], 0.8)
    truth = pd.DataFrame({"gene": ["g"] * 3, "region": list("abc"), "linked": [False, True, False]})
    auroc = link_auroc(summ, truth)
    assert auroc["score"] == 1.0 and auroc["distance_score"] == 0.0
    with pytest.raises(ValueError, match="both"):
        link_auroc(summ, truth.assign(linked=False))
