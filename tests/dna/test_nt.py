import numpy as np
import pytest

from atacformer.dna import NTEmbedder, NTOptions, build_table, nt_embed, nt_tokens
from atacformer.tokenize import BinVocab


def test_nt_tokens_follow_nt_rules():
    assert nt_tokens("ATCGGATNCGGATCCAAT") == ["ATCGGA", "T", "N", "CGGATC", "C", "A", "A", "T"]
    assert nt_tokens("acgtacR") == ["ACGTAC", "N"]


def test_token_ids_match_the_local_tokenizer(tiny_nt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_nt, local_files_only=True)
    emb = NTEmbedder(tiny_nt, device="cpu")
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 200)) + "NN" + "".join(rng.choice(list("ACGT"), 45))
    assert emb.token_ids(seq) == tok(seq)["input_ids"]


def test_nt_embedding_is_masked_mean_of_last_layer(tiny_nt):
    import torch
    from transformers import AutoModelForMaskedLM

    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (600, 600, 250)] + ["N" * 600]
    one = nt_embed(seqs, model=tiny_nt, batch_size=1, device="cpu")
    batched = nt_embed(seqs, model=tiny_nt, batch_size=4, device="cpu")  # padding must not change results
    assert one.shape == (4, 16) and np.allclose(one, batched, atol=1e-5)
    assert not one[3].any() and np.abs(one[:3]).sum(1).min() > 0  # all-N bin → zero
    model = AutoModelForMaskedLM.from_pretrained(tiny_nt, local_files_only=True).eval()
    ids = torch.tensor([NTEmbedder(tiny_nt, device="cpu").token_ids(seqs[2])])
    with torch.no_grad():
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert np.allclose(one[2], h[0].mean(0).numpy(), atol=1e-5)


def test_build_nt_table(toy, tiny_nt, tmp_path):
    genome, fasta, seqs = toy
    table = build_table(genome, fasta, out=tmp_path / "nt", method="nt", model=tiny_nt, bin_size=1000,
                        nt=NTOptions(batch_size=8, device="cpu"), dtype="float32")
    assert table.dim == 16 and len(table) == 43
    assert table.metadata["layer"] == "last" and table.metadata["source_model"] == tiny_nt.name
    assert not table.embeddings[3].any()  # the all-N bin
    direct = nt_embed([seqs["chr2"][1000:2000]], model=tiny_nt, device="cpu")
    assert np.allclose(table.embeddings[24], direct[0], atol=1e-5)
    assert table.aligned(BinVocab(genome, 1000)).shape == (43 + 5, 16)
    with pytest.raises(ValueError, match="16-d embeddings, not dim=32"):
        build_table(genome, fasta, out=tmp_path / "nt2", method="nt", model=tiny_nt, dim=32, bin_size=1000)
    gap_edge = "N" * 900 + seqs["chr1"][:600]  # 1,000 single-N tokens: Ns are dropped to fit 256
    assert np.allclose(nt_embed([gap_edge], model=tiny_nt, device="cpu"), nt_embed([seqs["chr1"][:600]],
                       model=tiny_nt, device="cpu"), atol=1e-5)
    with pytest.raises(ValueError, match="2000 bp bin is 337 tokens, more than the model's 256"):
        build_table(genome, fasta, out=tmp_path / "nt3", method="nt", model=tiny_nt, bin_size=2000)
    assert not (tmp_path / "nt3").exists()  # refused before anything was written


def test_missing_model_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        NTEmbedder(tmp_path / "InstaDeepAI/nucleotide-transformer-v2-50m-multi-species")
