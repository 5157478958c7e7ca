import logging

import numpy as np
import pytest

from atacformer.dna import DNAEmbeddingTable, read_table
from atacformer.genome import Genome
from atacformer.tokenize import BinVocab

SIZES = {"chr1": 23_000, "chr2": 12_000, "chrX": 7_500}


@pytest.fixture()
def genome():
    return Genome.from_chrom_sizes(SIZES, name="toy")


def make_table(genome, dim=8, *, seed=0, dtype=np.float32):
    """A table whose row for bin b holds b + column/100, so alignment is checkable by value."""
    bins = genome.bins(1000)
    rows = (np.arange(bins.n_bins)[:, None] + np.arange(dim)[None, :] / 100).astype(dtype)
    meta = {"genome": genome.name, "bin_size": 1000, "source_model": "test", "layer": "none", "pooling": "none",
            "chrom_sizes": dict(genome.chrom_sizes)}
    return DNAEmbeddingTable(rows, bins.names(), meta), bins


def test_aligned_by_name_not_row_order(genome):
    table, bins = make_table(genome)
    perm = np.random.default_rng(0).permutation(len(table))
    shuffled = DNAEmbeddingTable(table.embeddings[perm], table.bin_names[perm], table.metadata)
    vocab = BinVocab(genome, 1000)
    E = shuffled.aligned(vocab)
    assert E.shape == (len(vocab), 8) and E.dtype == np.float32
    assert not E[: vocab.n_special].any()  # <pad>, <cls>, <eos_c> → zero
    assert np.allclose(E[vocab.bin_to_token(np.arange(bins.n_bins)), 0], np.arange(bins.n_bins))
    assert shuffled.n_missing == 0 and shuffled.n_unused == 0


def test_missing_and_extra_rows(genome, caplog):
    table, bins = make_table(genome)
    keep = np.ones(len(table), bool)
    keep[[0, 5, 40]] = False
    names = np.concatenate([table.bin_names[keep], ["chrY:0-1000", "1:1000-2000x"]])  # unused rows
    rows = np.concatenate([table.embeddings[keep], np.ones((2, 8), np.float32)])
    t = DNAEmbeddingTable(rows, names, table.metadata)
    vocab = BinVocab(genome, 1000)
    with caplog.at_level(logging.WARNING, logger="atacformer.dna.table"):
        E = t.aligned(vocab)
    assert t.n_missing == 3 and t.n_unused == 2 and "3 missing" in caplog.text
    assert not E[vocab.bin_to_token([0, 5, 40])].any()
    assert E[vocab.bin_to_token(6), 0] == 6


def test_unnormalised_names_align(genome):
    table, bins = make_table(genome)
    names = [n.removeprefix("chr") for n in table.bin_names]  # Ensembl-style 1:0-1000
    E = DNAEmbeddingTable(table.embeddings, names, table.metadata).aligned(BinVocab(genome, 1000))
    assert E[BinVocab(genome, 1000).bin_to_token(30), 0] == 30


def test_wrong_genome_or_bin_size_is_an_error(genome, tmp_path):
    table, _ = make_table(genome)
    with pytest.raises(ValueError, match="genome 'toy'.*not genome 'hg38'"):
        table.aligned(BinVocab("hg38", 1000))
    with pytest.raises(ValueError, match="1000 bp bins, not genome 'toy' with 500 bp"):
        table.aligned(BinVocab(genome, 500))
    other = Genome.from_chrom_sizes({**SIZES, "chr2": 12_345}, name="toy")
    with pytest.raises(ValueError, match="other lengths"):
        table.aligned(BinVocab(other, 1000))
    table.save(tmp_path / "t.npz")
    with pytest.raises(ValueError, match="not genome 'hg19'"):
        DNAEmbeddingTable.load(tmp_path / "t.npz", genome="hg19")


def test_duplicate_names_and_bad_shapes(genome):
    table, _ = make_table(genome)
    names = table.bin_names.copy()
    names[3] = names[2]
    with pytest.raises(ValueError, match="duplicate bin names.*chr1:2000-3000"):
        DNAEmbeddingTable(table.embeddings, names, table.metadata).aligned(BinVocab(genome, 1000))
    with pytest.raises(ValueError, match="bin names for"):
        DNAEmbeddingTable(table.embeddings, names[:-1], table.metadata)
    with pytest.raises(ValueError, match="lacks"):
        DNAEmbeddingTable(table.embeddings, names, {"genome": "toy"})


@pytest.mark.parametrize("name", ["tab", "tab.npy", "tab.npz", "tab.h5", "tab.parquet"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_formats_round_trip(genome, tmp_path, name, dtype):
    table, bins = make_table(genome)
    perm = np.random.default_rng(1).permutation(len(table))
    t = DNAEmbeddingTable(table.embeddings[perm], table.bin_names[perm], table.metadata)
    t.save(tmp_path / name, dtype=dtype)
    back = DNAEmbeddingTable.load(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.metadata["dtype"] == dtype
    assert (back.genome, back.bin_size, back.dim) == ("toy", 1000, 8)
    assert back.bin_names.tolist() == t.bin_names.tolist()
    vocab = BinVocab(genome, 1000)
    tol = 0.02 if dtype == "float16" else 1e-6  # float16 keeps ~3 significant digits
    assert np.allclose(back.aligned(vocab), table.aligned(vocab), atol=tol)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    if name in ("tab", "tab.npy"):
        assert isinstance(back.embeddings, np.memmap)


def test_fp16_halves_the_file(genome, tmp_path):
    table, _ = make_table(genome, dim=64)
    table.save(tmp_path / "a.npy", dtype="float32")
    table.save(tmp_path / "b.npy", dtype="float16")
    a, b = (tmp_path / "a.npy").stat().st_size, (tmp_path / "b.npy").stat().st_size
    assert b < 0.55 * a


def test_incomplete_or_unknown_tables(genome, tmp_path):
    table, _ = make_table(genome)
    table.save(tmp_path / "tab")
    (tmp_path / "tab" / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        read_table(tmp_path / "tab")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown DNA table format"):
        DNAEmbeddingTable.load(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError):
        DNAEmbeddingTable.load(tmp_path / "nope.npz")
