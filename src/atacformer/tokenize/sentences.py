"""Cell sentences, by the vocabulary's decoder (:mod:`.vocab`):

* ``chromosome``: ``<cls>  bins(chr1)  <eos_1>  bins(chr2)  <eos_2> … <eos_C>``;
* ``region-class`` / ``class-x-chromosome``: ``<cls>  bins (genomic order)  <eos_1> … <eos_R>``, the
  R region tokens after the bins, in region order;
* ``cross-attention``: ``<cls>  bins`` (the decoder's queries are not tokens).

Every ``<eos>`` is present even when its region has no open bin. Cells with more open bins than fit in
``max_length`` are subsampled without replacement (seeded), genomic order kept.

Why the class tokens sit at the end: the encoder adds no positional encoding (a sentence is a set), so
a token's place carries no information and any layout gives the same model; the bins then stay in
genomic order exactly as for the chromosome decoder (same subsample for the same seed, same corpus),
and the ``<eos>`` positions are fixed offsets from the end of the sentence. Interleaving them by class
would reorder the bins by class, which no part of the model could see either.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .vocab import BinVocab

DEFAULT_MAX_LENGTH = 5000


def sorted_unique(values) -> np.ndarray:
    """``np.unique`` of int64 ids, fast on what cells hold: ids that are already sorted and unique (CSR
    rows) come back as they are (a view); others are sorted and deduplicated."""
    a = np.asarray(values, dtype=np.int64)
    if len(a) < 2 or bool((a[1:] > a[:-1]).all()):
        return a
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def subsample_bins(bin_ids: np.ndarray, n_keep: int, rng: np.random.Generator) -> np.ndarray:
    """Keep ``n_keep`` of ``bin_ids`` chosen uniformly without replacement, in their original order."""
    if len(bin_ids) <= n_keep:
        return bin_ids
    keep = np.sort(rng.choice(len(bin_ids), size=n_keep, replace=False))
    return bin_ids[keep]


def cell_sentence(
    bin_ids: np.ndarray,
    vocab: BinVocab,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """Token ids of one cell's sentence from its open global bin ids (any order, duplicates allowed).

    Returns an int64 array of length ``1 + n_open + vocab.n_eos`` (at most ``max_length``)."""
    n_fixed = 1 + vocab.n_eos
    if max_length <= n_fixed:
        raise ValueError(f"max_length={max_length} leaves no room for bins ({n_fixed} special tokens)")
    bins = sorted_unique(bin_ids)  # sorted = genomic order
    if len(bins) and (bins[0] < 0 or bins[-1] >= vocab.n_bins):
        raise ValueError(f"bin ids must be in [0, {vocab.n_bins}), got {bins[0]}..{bins[-1]}")
    if len(bins) > max_length - n_fixed:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        bins = subsample_bins(bins, max_length - n_fixed, rng)
    if vocab.decoder != "chromosome":
        return np.concatenate([[vocab.cls_id], vocab.bin_to_token(bins), vocab.eos_ids]).astype(np.int64)
    chrom = vocab.bins.chrom_of(bins)
    counts = np.bincount(chrom, minlength=vocab.n_chroms)
    eos_pos = np.cumsum(counts + 1)  # position of <eos_c> (the <cls> at 0 shifts everything by one)
    out = np.empty(1 + len(bins) + vocab.n_chroms, dtype=np.int64)
    is_bin = np.ones(len(out), dtype=bool)
    is_bin[0] = False
    is_bin[eos_pos] = False
    out[0] = vocab.cls_id
    out[eos_pos] = vocab.eos_ids
    out[is_bin] = vocab.bin_to_token(bins)
    return out


def open_bins(X: sp.csr_matrix, row: int) -> np.ndarray:
    """Global bin ids with a non-zero count in row ``row`` of a cells × bins CSR matrix."""
    start, end = X.indptr[row], X.indptr[row + 1]
    idx = X.indices[start:end]
    return np.sort(idx[X.data[start:end] != 0]).astype(np.int64)


def iter_sentences(X, vocab: BinVocab, *, max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0):
    """Yield the sentence of each row of a cells × bins matrix (columns = global bin ids).

    Cell ``i`` is subsampled with its own generator ``default_rng([seed, i])`` so results do not
    depend on iteration order or sharding."""
    X = sp.csr_matrix(X)
    if X.shape[1] != vocab.n_bins:
        raise ValueError(f"matrix has {X.shape[1]} columns but the vocabulary has {vocab.n_bins} bins")
    for i in range(X.shape[0]):
        yield cell_sentence(open_bins(X, i), vocab, max_length=max_length, rng=np.random.default_rng([seed, i]))
