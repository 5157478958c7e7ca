import numpy as np
import pytest

from atacformer.tokenize import BinVocab


def test_human_vocab_is_bins_plus_25():
    v = BinVocab("hg38", 5000)
    assert len(v) == v.n_bins + 25
    assert v.eos_ids.tolist() == list(range(2, 25))
    assert v.token_to_bin(v.bin_to_token([0, 5])).tolist() == [0, 5]
    assert v.token_to_bin([0, 1, 24]).tolist() == [-1, -1, -1]


def test_mouse_vocab_has_20_eos():
    assert len(BinVocab("mm10")) - BinVocab("mm10").n_bins == 22


def test_save_load_and_mismatch(tmp_path):
    v = BinVocab("hg19", 10_000)
    v.save(tmp_path)
    w = BinVocab.load(tmp_path)
    assert len(w) == len(v) and w.genome.name == "hg19" and w.bin_size == 10_000
    with pytest.raises(ValueError, match="genome"):
        BinVocab.load(tmp_path, genome="hg38")
    with pytest.raises(ValueError, match="bins"):
        BinVocab.load(tmp_path, bin_size=5000)
    assert np.array_equal(w.token_names()[:3], ["<pad>", "<cls>", "<eos_chr1>"])
