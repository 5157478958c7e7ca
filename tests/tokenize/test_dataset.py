from types import SimpleNamespace

import numpy as np
import pytest
from torch.utils.data import DataLoader

from atacformer.tokenize import AnnDataCellDataset, Corpus, CorpusDataset, write_corpus
from atacformer.tokenize import dataset as dataset_mod


@pytest.fixture
def corpus(tmp_path, toy_bins, make_cells):
    """53 cells in 3 shards of ≤20 cells (16 rounded up to whole row groups): 10 row groups of 5, one of 3."""
    a, b = make_cells(toy_bins, 30, seed=1), make_cells(toy_bins, 23, seed=2, prefix="d")
    write_corpus([a, b], tmp_path / "corpus", cells_per_shard=16, row_group_size=5, progress=False)
    return Corpus(tmp_path / "corpus")


def _iter_as_worker(ds, worker, n_workers, monkeypatch):
    monkeypatch.setattr(dataset_mod, "get_worker_info", lambda: SimpleNamespace(id=worker, num_workers=n_workers))
    return [c["row"] for c in ds]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_cover_every_cell_once(corpus, shuffle, monkeypatch):
    seen = []
    for rank in range(3):
        ds = CorpusDataset(corpus, shuffle=shuffle, seed=5, shuffle_buffer=7, rank=rank, world_size=3)
        ds.set_epoch(2)
        rows = [r for w in range(2) for r in _iter_as_worker(ds, w, 2, monkeypatch)]
        assert len(rows) == len(ds) > 0
        seen += rows
    assert sorted(seen) == list(range(len(corpus)))


def test_drop_uneven_gives_every_rank_the_same_count(corpus):
    counts, seen = [], []
    for rank in range(4):  # 53 cells over 4 ranks
        ds = CorpusDataset(corpus, rank=rank, world_size=4, drop_uneven=True, seed=1)
        rows = [c["row"] for c in ds]
        counts.append(len(rows))
        assert len(rows) == len(ds)
        seen += rows
    assert len(set(counts)) == 1 and counts[0] >= 53 // 4 - 3  # balanced: at most one row group short
    assert len(set(seen)) == len(seen)  # still no cell twice


def test_real_dataloader_workers(corpus):
    ds = CorpusDataset(corpus, shuffle=True, seed=0, rank=1, world_size=2)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    rows = [c["row"] for c in loader]
    assert len(rows) == len(ds) == len(set(rows))
    other = [c["row"] for c in CorpusDataset(corpus, rank=0, world_size=2)]
    assert sorted(rows + other) == list(range(len(corpus)))


def test_shuffle_is_seeded_and_changes_per_epoch(corpus):
    def order(seed, epoch):
        ds = CorpusDataset(corpus, shuffle=True, seed=seed, shuffle_buffer=10)
        ds.set_epoch(epoch)
        return [c["row"] for c in ds]

    e0 = order(0, 0)
    assert e0 == order(0, 0)
    assert e0 != order(0, 1) and e0 != order(1, 0)
    assert sorted(e0) == sorted(order(0, 1)) == list(range(len(corpus)))
    assert e0 != sorted(e0)
    plain = [c["row"] for c in CorpusDataset(corpus, shuffle=False)]
    assert plain == list(range(len(corpus)))


def test_items_columns_and_errors(corpus):
    ds = CorpusDataset(corpus, shuffle=False, columns=["cell_type"])
    item = next(iter(ds))
    assert set(item) == {"bin_ids", "n_open", "cell_id", "row", "cell_type"}
    df = corpus.to_pandas()
    assert np.array_equal(item["bin_ids"], df["bin_ids"][0]) and item["cell_id"] == "c0"
    with pytest.raises(KeyError, match="organ"):
        CorpusDataset(corpus, columns=["organ"])
    with pytest.raises(ValueError, match="both rank and world_size"):
        CorpusDataset(corpus, rank=0)
    with pytest.raises(ValueError, match="not in"):
        CorpusDataset(corpus, rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match="corpus.json"):
        CorpusDataset(corpus.path / "shard-00000.parquet")


def test_anndata_dataset_matches_corpus(tmp_path, toy_bins, make_cells, open_bins_of, corpus):
    a = make_cells(toy_bins, 9, seed=4, labels=("T", "Mono", None))
    ds = AnnDataCellDataset(a, label_names=corpus)  # the corpus's vocabularies: Mono is unknown → -1
    assert len(ds) == 9 and ds.label_names["cell_type"] == ["B", "T"]
    for i, bins in enumerate(open_bins_of(a)):
        item = ds[i]
        assert np.array_equal(item["bin_ids"], bins) and item["cell_id"] == f"c{i}" and item["row"] == i
        ct = a.obs["cell_type"].iloc[i]
        assert item["cell_type"] == (1 if ct == "T" else -1)
        assert item["dataset"] == -1 and item["organ"] == -1
    own = AnnDataCellDataset(a[:, ::-1].copy(), label_keys=("cell_type",))  # columns in any order
    assert own.label_names == {"cell_type": ["Mono", "T"]}
    assert np.array_equal(own[3]["bin_ids"], open_bins_of(a)[3])


def test_rank_and_world_size_from_torch_distributed(corpus, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    ds = CorpusDataset(corpus, shuffle=False)
    assert (ds.rank, ds.world_size) == (1, 2)
    explicit = CorpusDataset(corpus, shuffle=False, rank=1, world_size=2)
    assert [c["row"] for c in ds] == [c["row"] for c in explicit]
    assert 0 < len(ds) < len(corpus)
