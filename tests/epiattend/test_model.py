import pytest
import torch

from atacformer.epiattend import EpiAttend, get_config
from atacformer.epiattend.model import AttentionPool, relative_position_features

# a very small model: 2048 bp -> 16 positions, crop 4 -> 8 outputs
SMALL = dict(seq_len=2048, stem_channels=8, seq_channels=12, epi_hidden=8, d_model=16, n_heads=2, key_size=8,
             n_layers=1, pos_features=8, crop=4, epi_channels=2, n_targets=3)


def _inputs(cfg, b=2):
    seq = torch.nn.functional.one_hot(torch.randint(0, 4, (b, cfg.seq_len)), 4).float()
    epi = torch.rand(b, cfg.epi_channels, cfg.n_positions)
    return seq, epi


def test_resolution_and_crop_arithmetic():
    cfg = get_config("tiny", **SMALL)
    assert cfg.bin_size == 128 and cfg.n_positions == 2048 // 128 == 16 and cfg.n_out == 16 - 2 * 4
    base = get_config("base")
    assert (base.n_positions, base.n_out) == (1536, 896)  # Enformer's 196,608 bp -> 896 outputs
    with pytest.raises(ValueError, match="multiple"):
        get_config("tiny", seq_len=2000)
    with pytest.raises(ValueError, match="no output"):
        get_config("tiny", seq_len=1024, crop=4)
    with pytest.raises(ValueError, match="mode"):
        get_config("tiny", mode="rna")


def test_forward_shapes_and_attention_maps():
    cfg = get_config("tiny", **SMALL)
    model = EpiAttend(cfg).eval()
    seq, epi = _inputs(cfg)
    y, maps = model(seq, epi, return_attention=True)
    assert y.shape == (2, 3, cfg.n_out) and (y >= 0).all()  # softplus heads
    assert len(maps) == 1 and maps[0].shape == (2, 2, 16, 16)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 16), atol=1e-5)
    # the sequence trunk itself downsamples 2048 bp to 16 positions
    assert model.trunk(seq).shape == (2, model.trunk.out_channels, 16)


def test_cell_type_axis_shares_the_trunk():
    cfg = get_config("tiny", **SMALL)
    model = EpiAttend(cfg).eval()
    seq, _ = _inputs(cfg)
    epi = torch.rand(2, 3, cfg.epi_channels, cfg.n_positions)  # (B, C, E, P)
    y = model(seq, epi)
    assert y.shape == (2, 3, 3, cfg.n_out)
    # same as running each cell type on its own
    y1 = model(seq, epi[:, 1])
    assert torch.allclose(y[:, 1], y1, atol=1e-5)


@pytest.mark.parametrize("mode", ["sequence", "epigenome", "both"])
def test_ablation_switches(mode):
    cfg = get_config("tiny", **SMALL, mode=mode)
    model = EpiAttend(cfg).eval()
    assert (model.trunk is not None) == (mode != "epigenome")
    assert (model.epi is not None) == (mode != "sequence")
    seq, epi = _inputs(cfg)
    y = model(seq if mode != "epigenome" else None, epi if mode != "sequence" else None)
    assert y.shape == (2, 3, cfg.n_out)
    # each ablated model responds to exactly the inputs it uses (ignored input: bit-identical output)
    seq2, epi2 = _inputs(cfg)
    seq_matters = not torch.equal(y, model(seq2 if mode != "epigenome" else None, epi if mode != "sequence" else None))
    epi_matters = not torch.equal(y, model(seq if mode != "epigenome" else None, epi2))
    assert seq_matters == (mode != "epigenome")
    assert epi_matters == (mode != "sequence")


def test_missing_or_misshaped_inputs_raise():
    cfg = get_config("tiny", **SMALL)
    model = EpiAttend(cfg)
    seq, epi = _inputs(cfg)
    with pytest.raises(ValueError, match="epi"):
        model(seq, None)
    with pytest.raises(ValueError, match="seq"):
        model(seq[:, :1024], epi)


def test_attention_pool_is_a_convex_pair_combination():
    pool = AttentionPool(3)
    x = torch.randn(2, 3, 8)
    y = pool(x)
    lo = torch.minimum(x[..., 0::2], x[..., 1::2])
    hi = torch.maximum(x[..., 0::2], x[..., 1::2])
    assert y.shape == (2, 3, 4) and (y >= lo - 1e-6).all() and (y <= hi + 1e-6).all()


def test_relative_position_features_are_symmetric_with_sign():
    f = relative_position_features(5, 8)  # distances -4..4
    assert f.shape == (9, 8)
    assert torch.allclose(f[:, :4], f.flip(0)[:, :4])  # symmetric half
    assert torch.allclose(f[:, 4:], -f.flip(0)[:, 4:])  # sign-multiplied half
    assert (f[4, 4:] == 0).all()  # distance 0 has no sign
