"""RNA encoders for CRAFT: gene alignment, normalisation, ranking, the three encoders."""

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from atacformer.models.rna import (
    GeneTokenEncoder,
    GeneVocab,
    HFRnaEncoder,
    MLPEncoder,
    RnaEncoderConfig,
    gene_scale,
    log_normalize,
    ranked_genes,
)


def _counts(n=6, g=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.gamma(1.0, 2.0, size=(n, g))).astype(np.float32)


def test_align_reorders_fills_missing_and_reports(caplog):
    vocab = GeneVocab(["a", "b", "c", "d"])
    X = sp.csr_matrix(np.array([[1, 2, 3], [4, 0, 6]], dtype=np.int32))
    with caplog.at_level(logging.WARNING):
        out, report = vocab.align(X, ["c", "zz", "a"], what="rna.h5ad")
    assert np.array_equal(out.toarray(), [[3, 0, 1, 0], [6, 0, 4, 0]])  # a, b(missing), c, d(missing)
    assert report["n_shared"] == 2 and report["n_missing"] == 2 and report["missing"] == ["b", "d"]
    assert "rna.h5ad: 2 of the model's 4 genes are missing" in caplog.text
    with pytest.raises(ValueError, match="none of its 2 genes is in the model's 4 genes"):
        vocab.align(X[:, :2], ["x", "y"])
    with pytest.raises(ValueError, match="3 columns but 2 gene names"):
        vocab.align(X, ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        GeneVocab(["a", "a"])


def test_non_integer_counts_warn_and_negative_fail(caplog):
    vocab = GeneVocab(["a", "b"])
    with caplog.at_level(logging.WARNING):
        vocab.align(np.array([[0.5, 1.2]]), ["a", "b"])
    assert "not integers and look log-normalised" in caplog.text
    with pytest.raises(ValueError, match="non-negative"):
        vocab.align(np.array([[-1.0, 1.0]]), ["a", "b"])


def test_gene_vocab_round_trip(tmp_path):
    GeneVocab(["x", "Gad1", "y"]).save(tmp_path)
    assert GeneVocab.load(tmp_path).genes == ["x", "Gad1", "y"]
    with pytest.raises(ValueError, match="no genes.json"):
        GeneVocab.load(tmp_path / "nope")


def test_log_normalize_and_gene_scale_match_brute_force():
    X = _counts()
    X[2] = 0  # an empty cell stays zero
    got = log_normalize(torch.from_numpy(X), 100.0).numpy()
    lib = X.sum(1, keepdims=True)
    want = np.log1p(np.divide(X, lib, out=np.zeros_like(X), where=lib > 0) * 100.0)
    assert np.allclose(got, want, atol=1e-6)
    scale = gene_scale(sp.csr_matrix(X), scale_factor=100.0)
    norm = np.divide(X, lib, out=np.zeros_like(X), where=lib > 0) * 100.0
    for j in range(X.shape[1]):
        nz = norm[:, j][norm[:, j] > 0]
        assert scale[j] == pytest.approx(np.median(nz) if nz.size else 1.0, rel=1e-5)


def test_ranked_genes_orders_by_scaled_expression():
    counts = torch.tensor([[0.0, 5, 1, 3], [2, 0, 0, 0]])
    scale = torch.tensor([1.0, 10.0, 1.0, 1.0])  # gene 1 is highly expressed everywhere: ranked down
    idx, valid = ranked_genes(counts, scale, 3, 1.0)
    assert idx[0].tolist() == [3, 2, 1] and valid[0].all()
    assert idx[1, 0] == 0 and valid[1].tolist() == [True, False, False]


@pytest.mark.parametrize("kind", ["mlp", "tokens"])
def test_encoders_normalise_inside(kind):
    config = RnaEncoderConfig(kind=kind, d_model=16, n_layers=2, n_heads=2, d_ff=32, max_genes=8, dropout=0.0)
    torch.manual_seed(0)
    enc = (MLPEncoder if kind == "mlp" else GeneTokenEncoder)(config, 12).eval()
    x = torch.from_numpy(_counts())
    out = enc(x)
    assert out.shape == (6, 16) and torch.isfinite(out).all()
    assert torch.allclose(enc(3 * x), out, atol=1e-5)  # library size does not matter, raw counts in
    assert torch.allclose(enc(x[2:3]), out[2:3], atol=1e-5)  # padding of other cells does not leak
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_gene_token_encoder_depends_on_the_ranking_only():
    config = RnaEncoderConfig(kind="tokens", d_model=16, n_layers=1, n_heads=2, d_ff=32, max_genes=3, dropout=0.0)
    torch.manual_seed(0)
    enc = GeneTokenEncoder(config, 5).eval()
    a = enc(torch.tensor([[9.0, 4, 1, 0, 0]]))
    assert torch.allclose(a, enc(torch.tensor([[20.0, 3, 2, 0, 1]])), atol=1e-6)  # same top-3 order
    assert not torch.allclose(a, enc(torch.tensor([[4.0, 9, 1, 0, 0]])), atol=1e-4)  # order changed
    enc.set_gene_scale([1.0, 100.0, 1.0, 1.0, 1.0])  # gene 1 scaled down: rank changes
    assert not torch.allclose(a, enc(torch.tensor([[9.0, 4, 1, 0, 0]])), atol=1e-4)


GENES = ["Snap25", "Gad1", "Mbp", "Plp1", "Slc17a7", "Aqp4"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A random 2-layer BERT whose tokenizer vocabulary is gene symbols (a Geneformer-shaped model)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_rna_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[g.lower() for g in GENES[:5]]]  # no Aqp4
    (d / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizer(str(d / "vocab.txt"), do_lower_case=True).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(d)
    return d


def test_hf_encoder_is_the_local_model_on_ranked_genes(tiny_hf, caplog):
    from transformers import AutoModel, AutoTokenizer

    lower = [g.lower() for g in GENES]
    with caplog.at_level(logging.WARNING):
        enc = HFRnaEncoder(RnaEncoderConfig(kind="hf", model_dir=str(tiny_hf), max_genes=4), lower).eval()
    assert "1 of 6 genes are not in the model's vocabulary" in caplog.text and enc.out_dim == 16
    counts = torch.tensor([[0.0, 7, 1, 3, 0, 50], [2, 0, 0, 0, 0, 0]])  # Aqp4 (unmapped) is never a token
    with torch.no_grad():
        got = enc(counts)
    tok = AutoTokenizer.from_pretrained(tiny_hf, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_hf, local_files_only=True).eval()
    for i, genes in enumerate([["gad1", "plp1", "mbp"], ["snap25"]]):
        ids = torch.tensor([[tok.cls_token_id, *tok.convert_tokens_to_ids(genes)]])
        with torch.no_grad():
            want = model(input_ids=ids).last_hidden_state[0, 0]
        assert torch.allclose(got[i], want, atol=1e-5)
    with pytest.raises(ValueError, match="none of the 2 genes"):
        HFRnaEncoder(RnaEncoderConfig(kind="hf", model_dir=str(tiny_hf)), ["Xist", "Ttr"])


def test_hf_encoder_needs_a_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        HFRnaEncoder(RnaEncoderConfig(kind="hf", model_dir=str(tmp_path / "ctheodoris/Geneformer")), GENES)
    with pytest.raises(ValueError, match="needs model_dir"):
        RnaEncoderConfig(kind="hf")
