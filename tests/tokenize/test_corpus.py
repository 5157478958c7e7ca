import json
import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from atacformer.genome import Genome
from atacformer.tokenize import BinVocab, Corpus, CorpusDataset, cell_sentence, write_corpus
from atacformer.tokenize import writer as writer_mod


def _by_cell(corpus_path):
    """{(dataset, cell_id): row dict} of every cell in the corpus, read back through the dataset."""
    ds = CorpusDataset(corpus_path, shuffle=False)
    names = ds.label_names["dataset"]
    return {(names[c["dataset"]], c["cell_id"]): c for c in ds}


def test_round_trip_many_inputs_exact_bins_and_labels(tmp_path, toy_bins, make_cells, open_bins_of):
    a = make_cells(toy_bins, 23, seed=1)
    b = make_cells(toy_bins, 17, seed=2, labels=("NK", None))
    b.obs["organ"] = "blood"
    a.write_h5ad(tmp_path / "a.h5ad")
    info = write_corpus([tmp_path / "a.h5ad", b], tmp_path / "corpus", cells_per_shard=8, row_group_size=3,
                        progress=False)
    # cells_per_shard is rounded up to whole row groups: 3 per group, 9 per shard
    assert info.n_cells == 40 and [s.row_groups for s in info.shards] == [(3, 3, 3)] * 4 + [(3, 1)]
    assert info.obs_columns == ("dataset", "cell_type", "organ", "batch")
    assert info.labels["cell_type"] == ["B", "NK", "T"] and info.labels["dataset"] == ["a", "adata1"]
    assert info.labels["batch"] == ["0", "1", "2"]

    cells = _by_cell(tmp_path / "corpus")
    assert len(cells) == 40
    for name, adata in (("a", a), ("adata1", b)):
        for cell_id, bins, ct in zip(adata.obs_names, open_bins_of(adata), adata.obs["cell_type"], strict=False):
            row = cells[(name, cell_id)]
            assert row["bin_ids"].dtype == np.int64 and np.array_equal(row["bin_ids"], bins)
            assert row["n_open"] == len(bins)
            assert row["cell_type"] == (-1 if ct is None or ct != ct else info.labels["cell_type"].index(ct))
            assert row["organ"] == (0 if name == "adata1" else -1)  # missing column → -1

    corpus = Corpus(tmp_path / "corpus")
    assert len(corpus) == 40 and len(corpus.shards) == 5 and corpus.label_names("organ") == ["blood"]
    df = corpus.to_pandas()
    assert df["organ"].isna().sum() == 23 and list(df["cell_id"][:2]) == ["c0", "c1"]
    assert corpus.vocab().n_bins == toy_bins.n_bins
    with pytest.raises(KeyError, match="donor"):
        corpus.label_names("donor")
    # medians from the histograms equal the direct ones; sentence tokens derive from bin_ids
    n_open = [len(x) for x in open_bins_of(a) + open_bins_of(b)]
    assert info.median_n_open == np.median(n_open)
    assert info.median_sentence_length == np.median(n_open) + 1 + 3
    vocab = BinVocab.load(tmp_path / "corpus")
    s = cell_sentence(df["bin_ids"][0], vocab)
    assert np.array_equal(vocab.token_to_bin(s[~vocab.is_special(s)]), open_bins_of(a)[0])


def test_bin_subset_and_permuted_columns_map_to_global_ids(tmp_path, toy_bins, make_cells, open_bins_of):
    full = make_cells(toy_bins, 12, seed=3)
    cols = np.random.default_rng(0).permutation(toy_bins.n_bins)[:20]
    sub = full[:, cols].copy()  # var chrom/start still present: fast path
    no_coords = sub.copy()
    no_coords.var = no_coords.var[[]]  # only the names: parsed
    dense = sub.copy()
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")  # a dense X on disk is read in row blocks too
    write_corpus({"s": sub, "n": no_coords, "d": tmp_path / "dense.h5ad"}, tmp_path / "c", row_group_size=5,
                 progress=False)
    cells = _by_cell(tmp_path / "c")
    keep = np.zeros(toy_bins.n_bins, dtype=bool)
    keep[cols] = True
    for cell_id, bins in zip(full.obs_names, open_bins_of(full), strict=False):
        expected = bins[keep[bins]]
        assert np.array_equal(cells[("s", cell_id)]["bin_ids"], expected)
        assert np.array_equal(cells[("n", cell_id)]["bin_ids"], expected)
        assert np.array_equal(cells[("d", cell_id)]["bin_ids"], expected)


def test_genome_and_bin_size_mismatch_and_bad_inputs(tmp_path, toy_bins, make_cells):
    a = make_cells(toy_bins, 5)
    other = Genome.from_chrom_sizes({"chr1": 100_000, "chr2": 60_000}, name="toy2").bins(5000)
    with pytest.raises(ValueError, match="all inputs must share genome and bin size"):
        write_corpus([a, make_cells(other, 5)], tmp_path / "c", progress=False)
    coarse = toy_bins.genome.bins(10_000)
    with pytest.raises(ValueError, match="10000 bp bins"):
        write_corpus([a, make_cells(coarse, 5)], tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="10000 bp bins"):
        write_corpus([a], tmp_path / "c", bin_size=10_000, progress=False)
    bare = a.copy()
    del bare.uns["genome"]
    with pytest.raises(ValueError, match="atacformer ingest"):
        write_corpus({"bare": bare}, tmp_path / "c", progress=False)
    peaks = a.copy()
    peaks.var_names = [f"chr1:{i * 7}-{i * 7 + 500}" for i in range(peaks.n_vars)]
    peaks.var = peaks.var[[]]
    with pytest.raises(ValueError, match="not 5000 bp bins"):
        write_corpus({"peaks": peaks}, tmp_path / "c", progress=False)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv: cannot tell the input type"):
        write_corpus([tmp_path / "x.csv"], tmp_path / "c", progress=False)
    assert not any(tmp_path.glob("c*")) and not any(tmp_path.glob(".c*"))


def test_fragment_input_needs_a_genome(tmp_path):
    frag = tmp_path / "s1.fragments.tsv.gz"
    frag.write_bytes(b"")
    with pytest.raises(ValueError, match="needs genome"):
        write_corpus([frag], tmp_path / "c", progress=False)


def test_failure_leaves_nothing_and_overwrite(tmp_path, toy_bins, make_cells, monkeypatch):
    a = make_cells(toy_bins, 30)
    calls = {"n": 0}
    real = writer_mod.block_table

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer_mod, "block_table", failing)
    with pytest.raises(OSError, match="disk full"):
        write_corpus([a], tmp_path / "c", cells_per_shard=5, row_group_size=5, progress=False)
    assert list(tmp_path.iterdir()) == []  # shards 0-1 were written in the temp folder, now gone

    monkeypatch.setattr(writer_mod, "block_table", real)
    write_corpus([a], tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="already exists"):
        write_corpus([a[:4]], tmp_path / "c", progress=False)
    calls["n"] = 0
    monkeypatch.setattr(writer_mod, "block_table", failing)
    with pytest.raises(OSError):  # a failed overwrite keeps the old corpus intact
        write_corpus([a], tmp_path / "c", row_group_size=5, overwrite=True, progress=False)
    assert len(Corpus(tmp_path / "c")) == 30
    monkeypatch.setattr(writer_mod, "block_table", real)
    write_corpus([a[:4]], tmp_path / "c", overwrite=True, progress=False)
    assert len(Corpus(tmp_path / "c")) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    meta = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert meta["format"] == "atacformer-corpus" and meta["genome"] == "toy" and meta["bin_size"] == 5000


def test_shard_writer_holds_at_most_one_row_group(tmp_path):
    schema = pa.schema([pa.field("x", pa.int32())])
    w = writer_mod.ShardWriter(tmp_path, schema, cells_per_shard=10, row_group_size=4)
    for n in (3, 4, 1, 7, 2, 3):  # 20 rows in uneven blocks
        w.write(pa.table({"x": pa.array(np.arange(n, dtype=np.int32))}, schema=schema))
    shards = w.close()
    assert [s.row_groups for s in shards] == [(4, 4, 2), (4, 4, 2)]
    assert w.max_rows_held <= 4 + 4 - 1
    assert pq.read_table(tmp_path / "shard-00001.parquet").num_rows == 10


def _wide_cells(bins, n_cells, k, seed):
    """n_cells with exactly k open bins each (fast to generate)."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.sort(rng.choice(bins.n_bins, k, replace=False)) for _ in range(n_cells)])
    X = sp.csr_matrix((np.ones(n_cells * k, np.int32), idx.astype(np.int32), np.arange(0, n_cells * k + 1, k)),
                      shape=(n_cells, bins.n_bins))
    return ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=bins.var(), uns=bins.uns())


def test_h5ad_streams_in_bounded_memory(tmp_path):
    """Peak Python-heap memory of writing a corpus does not grow with the h5ad's size."""
    big_bins = Genome.from_chrom_sizes({"chr1": 40_000_000}, name="big").bins(5000)  # 8000 bins
    peaks = {}
    for n_cells in (1500, 6000):
        a = _wide_cells(big_bins, n_cells, 400, seed=n_cells)
        a.write_h5ad(tmp_path / f"{n_cells}.h5ad")
        x_bytes = a.X.data.nbytes + a.X.indices.nbytes
        del a
        tracemalloc.start()
        info = write_corpus([tmp_path / f"{n_cells}.h5ad"], tmp_path / f"c{n_cells}", cells_per_shard=1000,
                            row_group_size=250, obs_columns=(), progress=False)
        peaks[n_cells] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert info.n_cells == n_cells and len(info.shards) == -(-n_cells // 1000)
        assert info.median_n_open == 400
    assert x_bytes > 15e6  # the big matrix is ~19 MB ...
    assert peaks[6000] < x_bytes / 3  # ... the writer never held a large part of it
    assert peaks[6000] < 1.25 * peaks[1500] + 0.5e6  # and its peak is flat in the input size
