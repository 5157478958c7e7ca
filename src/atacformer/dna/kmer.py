"""Fast k-mer embeddings of bin sequences: the offline fallback when no Nucleotide Transformer is at hand.

Features of one bin (all invariant to reverse complement):

- the canonical 6-mer spectrum (2,080 classes: a 6-mer and its reverse complement count together),
  as ``log1p(count / expected) - log 2`` where ``expected`` is the count a uniform random sequence of
  the same number of valid (N-free) 6-mers would give, so a random sequence sits near 0;
- GC content (centred at 0.5), CpG observed/expected (``log1p(o/e) - log 2``) and the N fraction,
  each weighted by :data:`SCALAR_WEIGHT` so they are not drowned by the 2,080 k-mer features.

The 2,083 features are projected to ``dim`` by a fixed Gaussian random projection drawn from a seeded
generator, so the embedding is deterministic. Bins that are all N get a zero vector.

Everything is vectorised over many bins at once: bases → 3-bit codes by a lookup table, 6-mer
indices by three shift-or steps, canonical classes by a second lookup table (any 6-mer with an N
falls into a dump class) and one ``bincount`` over ``row * n_classes + class``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import product

import numpy as np

K = 6
N_CANONICAL = 2080  # (4**6 + 4**3) / 2: 6-mers up to reverse complement
N_FEATURES = N_CANONICAL + 3  # + GC, CpG o/e, N fraction
SCALAR_WEIGHT = 8.0
CHUNK_BINS = 256  # bins per vectorised step (keeps the (n, L) int64 temporaries ~10 MB)
A, C, G, T, N = 0, 1, 2, 3, 4  # 3-bit base codes; complement of x < 4 is 3 - x


def _base_lut() -> np.ndarray:
    lut = np.full(256, N, dtype=np.uint8)
    for ch, code in zip("ACGT", (A, C, G, T), strict=False):
        lut[ord(ch)] = lut[ord(ch.lower())] = code
    return lut


BASE_LUT = _base_lut()


@lru_cache(maxsize=1)
def canonical_lut() -> tuple[np.ndarray, np.ndarray]:
    """(lut, multiplicity): ``lut[code6]`` is the canonical class (0..2079) of a 6-mer written as six
    3-bit codes (first base in the high bits), or 2080 if it holds an N; ``multiplicity[c]`` is 1 for
    palindromic classes and 2 otherwise (how many of the 4**6 6-mers fall into the class)."""
    lut = np.full(8**K, N_CANONICAL, dtype=np.int64)
    classes: dict[tuple[int, ...], int] = {}
    mult = np.zeros(N_CANONICAL, dtype=np.float64)
    for kmer in product(range(4), repeat=K):
        rc = tuple(3 - b for b in reversed(kmer))
        key = min(kmer, rc)
        cls = classes.setdefault(key, len(classes))
        code = 0
        for b in kmer:
            code = (code << 3) | b
        lut[code] = cls
        mult[cls] += 1
    return lut, mult


def encode(seqs: Sequence[str] | str, *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """3-bit codes of sequences, padded with N: ``(codes (n, L) uint8, lengths (n,) int64)``."""
    if isinstance(seqs, str):
        seqs = [seqs]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    width = int(length if length is not None else (lengths.max() if len(seqs) else 0))
    raw = np.full((len(seqs), width), ord("N"), dtype=np.uint8)
    for i, s in enumerate(seqs):
        raw[i, : len(s)] = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
    return BASE_LUT[raw], lengths


def encode_region(seq: str, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes of consecutive bins cut from one contiguous sequence (the last bin may be short)."""
    n = -(-len(seq) // bin_size)
    raw = np.full(n * bin_size, ord("N"), dtype=np.uint8)
    raw[: len(seq)] = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
    lengths = np.full(n, bin_size, dtype=np.int64)
    if n:
        lengths[-1] = len(seq) - (n - 1) * bin_size
    return BASE_LUT[raw.reshape(n, bin_size)], lengths


def kmer_features_codes(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Features (n, 2083) float32 of bins given as codes (n, L) padded with N beyond ``lengths``."""
    n, width = codes.shape
    lut, mult = canonical_lut()
    feats = np.zeros((n, N_FEATURES), dtype=np.float32)
    if width < K or n == 0:
        return feats
    d2 = (codes[:, :-1] << 3) | codes[:, 1:]  # (n, L-1) uint8 dinucleotides, 6 bits
    d4 = (d2[:, :-2].astype(np.uint16) << 6) | d2[:, 2:]  # (n, L-3) 12 bits
    d6 = (d4[:, :-2].astype(np.uint32) << 6) | d2[:, 4:]  # (n, L-5) 6-mers, 18 bits
    cls = lut[d6]  # (n, L-5) canonical class, 2080 = has an N
    cls += (np.arange(n, dtype=np.int64) * (N_CANONICAL + 1))[:, None]
    counts = np.bincount(cls.ravel(), minlength=n * (N_CANONICAL + 1)).reshape(n, N_CANONICAL + 1)
    counts = counts[:, :N_CANONICAL].astype(np.float32)
    n_valid = counts.sum(axis=1, keepdims=True)  # (n, 1)
    expected = n_valid * (mult / 4**K).astype(np.float32)  # (n, 2080)
    with np.errstate(divide="ignore", invalid="ignore"):
        spectrum = np.log1p(counts / expected) - np.float32(np.log(2.0))
    feats[:, :N_CANONICAL] = np.where(n_valid > 0, spectrum, 0.0)

    base = np.stack([(codes == b).sum(axis=1) for b in (C, G, N)], axis=1).astype(np.float64)  # (n, 3)
    n_c, n_g, n_n = base[:, 0], base[:, 1], base[:, 2] - (width - lengths)  # padding is not sequence
    acgt = lengths - n_n
    cg = (d2 == ((C << 3) | G)).sum(axis=1)  # CpG dinucleotides
    with np.errstate(divide="ignore", invalid="ignore"):
        gc = np.where(acgt > 0, (n_c + n_g) / acgt, 0.5)
        oe = np.where(n_c * n_g > 0, cg * acgt / (n_c * n_g), 1.0)
        nfrac = np.where(lengths > 0, n_n / np.maximum(lengths, 1), 1.0)
    feats[:, N_CANONICAL] = SCALAR_WEIGHT * (gc - 0.5)
    feats[:, N_CANONICAL + 1] = SCALAR_WEIGHT * (np.log1p(oe) - np.log(2.0))
    feats[:, N_CANONICAL + 2] = SCALAR_WEIGHT * nfrac
    feats[acgt == 0] = 0.0  # all-N (or empty) bins carry no sequence information
    return feats


def kmer_features(seqs: Sequence[str] | str) -> np.ndarray:
    """Features (n, 2083) float32 of sequences (canonical 6-mer spectrum, GC, CpG o/e, N fraction)."""
    return kmer_features_codes(*encode(seqs))


@lru_cache(maxsize=8)
def projection(dim: int, seed: int = 0) -> np.ndarray:
    """The fixed Gaussian random projection (2083, dim), scaled by 1/sqrt(dim): float32 values held as float64,
    so the product in :meth:`KmerEmbedder.embed_codes` is float64 (its rounding to float32 then no longer
    depends on how many bins one matrix product holds, i.e. on shard and chunk sizes)."""
    if dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    rng = np.random.default_rng([seed, dim, N_FEATURES])
    proj = (rng.standard_normal((N_FEATURES, dim)).astype(np.float32) / np.float32(np.sqrt(dim))).astype(np.float64)
    proj.setflags(write=False)
    return proj


class KmerEmbedder:
    """Deterministic k-mer embedding of bins: features (n, 2083) @ projection (2083, dim)."""

    method = "kmer"

    def __init__(self, dim: int = 256, *, seed: int = 0):
        self.dim = int(dim)
        self.seed = int(seed)
        self.proj = projection(self.dim, self.seed)

    @property
    def metadata(self) -> dict:
        return {"source_model": f"kmer{K}-canonical+gc+cpg+n/random-projection(seed={self.seed})",
                "layer": "none", "pooling": "spectrum"}

    def check_bin_size(self, bin_size: int) -> None:
        if bin_size < K:
            raise ValueError(f"bins of {bin_size} bp are shorter than the {K}-mers the k-mer method counts")

    def embed_codes(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Embeddings (n, dim) of bins as codes (n, L); computed in cache-sized chunks of bins."""
        out = np.empty((len(codes), self.dim), dtype=np.float32)
        for s in range(0, len(codes), CHUNK_BINS):
            e = min(s + CHUNK_BINS, len(codes))
            feats = kmer_features_codes(codes[s:e], lengths[s:e]).astype(np.float64)
            out[s:e] = feats @ self.proj  # float64 product: same float32 rows whatever the chunk; all-N rows stay 0
        return out

    def __call__(self, seqs: Sequence[str] | str) -> np.ndarray:
        """Embeddings (n, dim) float32 of sequences."""
        return self.embed_codes(*encode(seqs))

    def embed_region(self, seq: str, bin_size: int) -> np.ndarray:
        """Embeddings (n_bins, dim) of consecutive bins cut from one contiguous sequence."""
        out = np.empty((-(-len(seq) // bin_size), self.dim), dtype=np.float32)
        step = CHUNK_BINS * bin_size
        for s in range(0, len(seq), step):  # encode chunk by chunk: codes are 4 bytes per base
            out[s // bin_size : (s + step) // bin_size] = self.embed_codes(*encode_region(seq[s : s + step], bin_size))
        return out


def kmer_embed(seqs: Sequence[str] | str, *, dim: int = 256, seed: int = 0) -> np.ndarray:
    """Deterministic k-mer embeddings (n, dim) float32 of DNA sequences; all-N sequences → 0."""
    return KmerEmbedder(dim, seed=seed)(seqs)
