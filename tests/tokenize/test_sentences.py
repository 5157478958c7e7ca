import numpy as np
import pytest
import scipy.sparse as sp

from atacformer.genome import Genome
from atacformer.tokenize import BinVocab, cell_sentence, iter_sentences


@pytest.fixture
def vocab():
    return BinVocab(Genome.from_chrom_sizes({"chr1": 20_000, "chr2": 10_000, "chr3": 5_000}, name="toy"), 5000)


def test_sentence_layout_every_eos_present(vocab):
    # bins: chr1 0..3, chr2 4..5, chr3 6 ; tokens = bin + 5
    s = cell_sentence(np.array([5, 1, 3, 1]), vocab)
    assert s.tolist() == [1, 6, 8, 2, 10, 3, 4]  # cls, chr1 bins 1,3, eos1, chr2 bin 5, eos2, eos3
    empty = cell_sentence(np.array([], dtype=int), vocab)
    assert empty.tolist() == [1, 2, 3, 4]


def test_long_cells_subsampled_in_order_and_seeded(vocab):
    s1 = cell_sentence(np.arange(7), vocab, max_length=7, rng=3)
    s2 = cell_sentence(np.arange(7), vocab, max_length=7, rng=3)
    assert len(s1) == 7 and s1.tolist() == s2.tolist()
    bins = s1[~vocab.is_special(s1)]
    assert np.all(np.diff(bins) > 0)
    with pytest.raises(ValueError, match="no room"):
        cell_sentence(np.arange(3), vocab, max_length=4)


def test_iter_sentences_matches_rows(vocab):
    X = sp.csr_matrix(np.array([[0, 2, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]))
    out = list(iter_sentences(X, vocab))
    assert out[0].tolist() == [1, 6, 2, 3, 11, 4] and out[1].tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="columns"):
        list(iter_sentences(sp.csr_matrix((1, 3)), vocab))
