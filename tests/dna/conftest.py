"""Shared fixtures: a tiny synthetic genome (chrom sizes + FASTA) and a tiny NT-shaped (ESM) model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from atacformer.genome import Genome

SIZES = {"chr1": 23_000, "chr2": 12_000, "chrX": 7_500}  # 1 kb bins: 23 + 12 + 8 (last one short)


def random_dna(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACGT"), size=n))


def write_fasta(path, seqs: dict[str, str], width: int = 60) -> None:
    with open(path, "w") as fh:
        for name, seq in seqs.items():
            fh.write(f">{name} synthetic\n")
            fh.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """(genome, fasta path, {chrom: sequence}): chromosome names in the FASTA are Ensembl-style (``1``),
    soft-masked stretches in lower case, an all-N bin chr1:3000-4000 and a partly-N bin chr2:0-1000."""
    d = tmp_path_factory.mktemp("toy_genome")
    rng = np.random.default_rng(7)
    seqs = {c: random_dna(rng, n) for c, n in SIZES.items()}
    seqs["chr1"] = seqs["chr1"][:3000] + "N" * 1000 + seqs["chr1"][4000:5000].lower() + seqs["chr1"][5000:]
    seqs["chr2"] = "N" * 400 + seqs["chr2"][400:]
    write_fasta(d / "toy.fa", {c.removeprefix("chr"): s for c, s in seqs.items()})
    (d / "toy.chrom.sizes").write_text("".join(f"{c}\t{n}\n" for c, n in SIZES.items()))
    genome = Genome.from_chrom_sizes(d / "toy.chrom.sizes", name="toy")
    return genome, d / "toy.fa", seqs


def nt_vocab() -> list[str]:
    """The layout of NT's vocabulary: specials, all 4,096 6-mers, single nucleotides."""
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=6)]
    return ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", *kmers, "A", "T", "C", "G", "N"]


@pytest.fixture(scope="session")
def tiny_nt(tmp_path_factory):
    """A randomly initialised NT-shaped model (ESM, rotary, 2 layers, hidden 16) + EsmTokenizer, saved."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    d = tmp_path_factory.mktemp("tiny_nt")
    vocab = nt_vocab()
    (d / "vocab.txt").write_text("\n".join(vocab))
    EsmTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    config = EsmConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=256, pad_token_id=1, mask_token_id=2,
                       position_embedding_type="rotary", token_dropout=False)
    torch.manual_seed(0)
    EsmForMaskedLM(config).save_pretrained(d)
    return d
