import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from atacformer.models import Atacformer, AtacformerConfig, auc_from_hist, collate_cells, state_metrics
from atacformer.models.decoder import StateDecoder


def _decoder_inputs(vocab, make_cells, n_cells=4, seed=0, high=25):
    batch = collate_cells(make_cells(vocab, n_cells, seed=seed, low=2, high=high), vocab, mask_fraction=0.3,
                          rng=np.random.default_rng(seed))
    g = torch.Generator().manual_seed(seed)
    eos = torch.randn(n_cells, vocab.n_chroms, 32, generator=g, requires_grad=True)  # (B, C, d)
    e1 = torch.randn(vocab.n_bins, 16, generator=g, requires_grad=True)  # (n_bins, k)
    return batch, eos, e1


def _decoder(vocab, **overrides):
    torch.manual_seed(0)
    cfg = AtacformerConfig.from_preset("tiny", vocab, **overrides)
    return Atacformer(cfg).decoder


def _brute_force_loss(dec: StateDecoder, eos, e1, batch, n_bins, weights):
    """Dense (B, n_bins) logits from the unsplit FFN on concat(compress(eos_c), E1[bin])."""
    z = dec.compress(eos)[:, dec.bin_region]  # (B, n_bins, eos_dim)
    x = torch.cat([z, e1[None].expand(z.shape[0], -1, -1)], dim=-1)  # (B, n_bins, eos_dim + k)
    w1 = torch.cat([dec.fc_eos.weight, dec.fc_bin.weight], dim=1)
    logits = dec.out(F.gelu(x @ w1.T + dec.fc_eos.bias))  # (B, n_bins, 3)
    y = torch.zeros(z.shape[0], n_bins, dtype=torch.long)
    y[batch.target_cell, batch.target_bin] = batch.target_state
    loss = F.cross_entropy(logits.reshape(-1, 3), y.flatten(), weight=torch.tensor(weights))
    return loss, logits, y


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (1.0, 5.0, 9.0)])
def test_decoder_matches_brute_force_with_class_weights(toy_vocab, make_cells, weights):
    dec = _decoder(toy_vocab, state_class_weights=weights, decoder_chunk_size=7)
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells)
    out = dec(eos, e1, batch.target_cell, batch.target_bin, batch.target_state)
    ref, _, y = _brute_force_loss(dec, eos, e1, batch, toy_vocab.n_bins, weights)
    torch.testing.assert_close(out.loss, ref, atol=1e-6, rtol=1e-5)
    assert out.state_count.tolist() == [float((y == s).sum()) for s in range(3)]


def test_chunked_equals_unchunked_loss_and_grads(toy_vocab, make_cells):
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells)
    results = []
    for chunk in (5, 10_000):
        dec = _decoder(toy_vocab, decoder_chunk_size=chunk)
        out = dec(eos, e1, batch.target_cell, batch.target_bin, batch.target_state)
        grads = torch.autograd.grad(out.loss, [eos, e1, dec.fc_bin.weight, dec.out.weight])
        results.append((out.loss.detach(), grads, out.state_hist))
    (l1, g1, h1), (l2, g2, h2) = results
    torch.testing.assert_close(l1, l2, atol=1e-6, rtol=1e-6)
    for a, b in zip(g1, g2, strict=False):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert torch.equal(h1, h2)


@pytest.mark.parametrize("training", [True, False])  # sparse per-cell pairs / dense grid over the batch's bins
def test_closed_bin_sampling_is_unbiased(toy_vocab, make_cells, training):
    dec = _decoder(toy_vocab, decoder_chunk_size=8).train(training)
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells, n_cells=2, seed=4, high=8)
    assert len(batch.target_bin.unique()) < toy_vocab.n_bins / 2  # most bins are closed in every cell
    args = (eos.detach(), e1.detach(), batch.target_cell, batch.target_bin, batch.target_state)
    with torch.no_grad():
        full = dec(*args).loss.item()
        torch.manual_seed(123)
        samples = np.array([dec(*args, sample_rate=0.2).loss.item() for _ in range(600)])
    se = samples.std() / np.sqrt(len(samples))
    assert samples.std() > 1e-3  # sampling really varies the loss
    assert abs(samples.mean() - full) < 4 * se + 1e-6
    assert abs(samples.mean() - full) < 0.05 * full


def test_removed_bin_thinning_is_unbiased_and_bounded(toy_vocab, make_cells):
    dec = _decoder(toy_vocab, decoder_chunk_size=8, state2_sample_max=3).train()
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells, n_cells=3, seed=5, high=25)
    batch = collate_cells(make_cells(toy_vocab, 3, seed=5, low=20, high=40), toy_vocab, mask_fraction=0.6,
                          rng=np.random.default_rng(5))
    n2 = torch.bincount(batch.target_cell[batch.target_state == 2], minlength=3)
    assert int(n2.min()) > 6  # thinning really applies
    args = (eos.detach(), e1.detach(), batch.target_cell, batch.target_bin, batch.target_state)
    with torch.no_grad():
        full = dec.eval()(*args).loss.item()
        dec.train()
        torch.manual_seed(7)
        outs = [dec(*args, sample_rate=0.3) for _ in range(800)]
    samples = np.array([o.loss.item() for o in outs])
    se = samples.std() / np.sqrt(len(samples))
    assert abs(samples.mean() - full) < 4 * se + 1e-6
    assert outs[0].state_count.tolist() == dec.eval()(*args).state_count.tolist()  # exact counts either way
    kept = torch.stack([o.state_hist[1].sum() for o in outs])  # removed pairs, importance-weighted
    assert abs(float(kept.mean()) - float(n2.sum())) < 0.1 * float(n2.sum())


def test_histogram_auc_matches_sklearn(toy_vocab, make_cells):
    dec = _decoder(toy_vocab)
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells, n_cells=6, seed=2)
    with torch.no_grad():
        out = dec(eos, e1, batch.target_cell, batch.target_bin, batch.target_state)
        _, logits, y = _brute_force_loss(dec, eos, e1, batch, toy_vocab.n_bins, (1.0, 1.0, 1.0))
    sel = (y == 0) | (y == 2)
    score, label = (logits[..., 2] - logits[..., 0])[sel].numpy(), (y[sel] == 2).numpy()
    auroc, auprc = auc_from_hist(out.state_hist)
    assert auroc == pytest.approx(roc_auc_score(label, score), abs=0.01)
    assert auprc == pytest.approx(average_precision_score(label, score), abs=0.03)
    assert np.isnan(auc_from_hist(torch.zeros(2, 8))[0])


def test_state_metrics_reports_per_state_losses(toy_vocab, make_cells):
    torch.manual_seed(0)
    model = Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, dropout=0.0))
    batch = collate_cells(make_cells(toy_vocab, 5, seed=7), toy_vocab, rng=np.random.default_rng(0))
    out = model(batch)
    m = state_metrics(out, batch)
    assert set(m) == {"loss_state0", "loss_state1", "loss_state2", "auroc_removed", "auprc_removed"}
    counts = out.state_count
    recon = (torch.tensor([m["loss_state0"], m["loss_state1"], m["loss_state2"]]) * counts)
    w = torch.tensor(model.config.state_class_weights)
    assert (w * recon).sum() / (w * counts).sum() == pytest.approx(out.losses["state"].item(), rel=1e-5)
    assert 0.0 <= m["auroc_removed"] <= 1.0


def test_observed_decoder_matches_brute_force_on_its_bins(toy_vocab, make_cells):
    """decoder_bins='observed': the loss is the full loss restricted to the observed bins' columns,
    and targets on other bins are ignored."""
    batch, eos, e1 = _decoder_inputs(toy_vocab, make_cells, n_cells=4, seed=1, high=12)
    observed = torch.unique(batch.target_bin)[:-2]  # two open bins left out of the decoder
    assert len(observed) < toy_vocab.n_bins
    dec = _decoder(toy_vocab, decoder_bins="observed", n_decoder_bins=len(observed), decoder_chunk_size=3,
                   state_class_weights=(1.0, 4.0, 6.0))
    dec.set_bins(observed)
    out = dec(eos, dec.bin_embeddings(e1), batch.target_cell, batch.target_bin, batch.target_state)
    _, logits, y = _brute_force_loss(dec, eos, e1, batch, toy_vocab.n_bins, (1.0, 4.0, 6.0))
    ref = F.cross_entropy(logits[:, observed].reshape(-1, 3), y[:, observed].flatten(),
                          weight=torch.tensor([1.0, 4.0, 6.0]))
    torch.testing.assert_close(out.loss, ref, atol=1e-6, rtol=1e-5)
    assert out.state_count.tolist() == [float((y[:, observed] == s).sum()) for s in range(3)]


def test_observed_bins_are_saved_and_validated(toy_vocab, tmp_path):
    cfg = AtacformerConfig.from_preset("tiny", toy_vocab, decoder_bins="observed", n_decoder_bins=3)
    model = Atacformer(cfg)
    model.decoder.set_bins(torch.tensor([2, 7, 30]))
    loaded = Atacformer.from_pretrained(model.save_pretrained(tmp_path))
    assert loaded.decoder.bins.tolist() == [2, 7, 30]
    with pytest.raises(ValueError, match="sorted, unique"):
        model.decoder.set_bins(torch.tensor([7, 2, 30]))
    with pytest.raises(ValueError, match="n_decoder_bins"):
        Atacformer(AtacformerConfig.from_preset("tiny", toy_vocab, decoder_bins="observed"))
    with pytest.raises(ValueError, match="decoder_bins"):
        AtacformerConfig.from_preset("tiny", toy_vocab, decoder_bins="some")
