import numpy as np
import pytest

from atacformer.dna import KmerEmbedder, kmer_embed, kmer_features
from atacformer.dna.kmer import N_CANONICAL, SCALAR_WEIGHT, canonical_lut, encode, encode_region, kmer_features_codes


def random_dna(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list("ACGT"), size=n))

COMP = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


def test_canonical_classes():
    lut, mult = canonical_lut()
    valid = lut[lut < N_CANONICAL]
    assert len(valid) == 4**6 and len(np.unique(valid)) == N_CANONICAL
    assert (mult == 1).sum() == 64 and mult.sum() == 4**6  # 4**3 reverse-complement palindromes


def test_kmer_counts_match_a_naive_count():
    rng = np.random.default_rng(1)
    seq = random_dna(rng, 300)
    feats = kmer_features(seq)[0, :N_CANONICAL]
    lut, mult = canonical_lut()
    code = {"A": 0, "C": 1, "G": 2, "T": 3}
    counts = np.zeros(N_CANONICAL)
    for i in range(len(seq) - 5):
        c = 0
        for ch in seq[i : i + 6]:
            c = (c << 3) | code[ch]
        counts[lut[c]] += 1
    expected = (len(seq) - 5) * mult / 4096
    assert np.allclose(feats, np.log1p(counts / expected) - np.log(2), atol=1e-5)


def test_reverse_complement_invariance():
    rng = np.random.default_rng(2)
    seqs = [random_dna(rng, 5000), "ACGT" * 300 + "N" * 37 + random_dna(rng, 777), random_dna(rng, 61) + "CG" * 50]
    rcs = [revcomp(s) for s in seqs]
    assert np.array_equal(kmer_features(seqs), kmer_features(rcs))
    assert np.allclose(kmer_embed(seqs, dim=64), kmer_embed(rcs, dim=64), atol=1e-5)
    assert not np.allclose(kmer_embed(seqs[0], dim=64), kmer_embed(seqs[1], dim=64), atol=1e-2)


def test_deterministic_and_seeded():
    rng = np.random.default_rng(3)
    seqs = [random_dna(rng, 2000) for _ in range(5)]
    a = kmer_embed(seqs, dim=32)
    assert a.shape == (5, 32) and a.dtype == np.float32
    assert np.array_equal(a, KmerEmbedder(32)(seqs))
    assert not np.allclose(a, kmer_embed(seqs, dim=32, seed=1))


def test_all_n_is_zero_and_scalar_features():
    f = kmer_features(["N" * 1000, "", "GC" * 500, "AT" * 400 + "N" * 200])
    assert not f[:2].any()
    assert not kmer_embed(["N" * 1000, "nnnn"], dim=16).any()
    assert f[2, N_CANONICAL] == pytest.approx(SCALAR_WEIGHT * 0.5)  # GC content 1
    assert f[3, N_CANONICAL] == pytest.approx(SCALAR_WEIGHT * -0.5)  # GC content 0 (Ns ignored)
    assert f[3, N_CANONICAL + 2] == pytest.approx(SCALAR_WEIGHT * 0.2)  # N fraction
    assert f[2, N_CANONICAL + 1] > 0  # CpG o/e = 2 for (GC)n


def test_case_insensitive_and_region_matches_single_bins():
    rng = np.random.default_rng(4)
    seq = random_dna(rng, 5 * 700 + 123)  # 5 full 700 bp bins and a short one
    assert np.array_equal(kmer_features(seq), kmer_features(seq.lower()))
    codes, lengths = encode_region(seq, 700)
    assert codes.shape == (6, 700) and lengths.tolist() == [700] * 5 + [123]
    per_bin = kmer_features([seq[i : i + 700] for i in range(0, len(seq), 700)])
    assert np.allclose(kmer_features_codes(codes, lengths), per_bin)
    emb = KmerEmbedder(24)
    assert np.allclose(emb.embed_region(seq, 700), emb([seq[i : i + 700] for i in range(0, len(seq), 700)]), atol=1e-5)
    assert encode("ACGTN")[0].tolist() == [[0, 1, 2, 3, 4]]
