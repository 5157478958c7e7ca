from collections import Counter

import numpy as np

from atacformer.io import iter_fragments
from atacformer.io._counter import CellIds, FragmentCounter

from .conftest import write_fragments


def test_cell_ids_keep_first_seen_order_across_index_rebuilds():
    ids = CellIds()
    names = [f"BC{i}" for i in range(500)]
    assert ids.ids(names[:3]).tolist() == [0, 1, 2]
    got = ids.ids(names[::-1])  # 497 new names: the pandas index is rebuilt
    assert got.dtype == np.int32 and got[-3:].tolist() == [2, 1, 0]
    assert ids.names == names[:3] + names[3:][::-1]
    again = ids.ids(["BC7", "new", "BC0", "new"])
    assert again.tolist() == [ids.names.index("BC7"), 500, 0, 500] and len(ids) == 501


def test_many_small_chunks_match_a_brute_force_count(tmp_path, toy_genome):
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(3000):
        chrom = ["chr1", "chr2", "chrM"][rng.integers(3)]
        start = int(rng.integers(0, 11_000))
        rows.append((chrom, start, start + int(rng.integers(1, 800)), f"BC{rng.integers(300)}", 1))
    path = write_fragments(tmp_path / "f.tsv", rows)
    bins = toy_genome.bins(1000)
    counter = FragmentCounter(bins)
    try:
        for chunk in iter_fragments(path, chunk_size=2048):  # ~60 chunks, barcodes met in a new order each time
            counter.add_chunk(chunk)
        expected, unique, tss_center = Counter(), Counter(), Counter()
        for chrom, start, end, bc, _ in rows:
            unique[bc] += 1
            if chrom != "chrM":
                off = int(bins.offsets[toy_genome.chrom_index(chrom)])
                for pos in (start, end - 1):
                    expected[(bc, off + pos // 1000)] += 1
                    tss_center[bc] += chrom == "chr1" and abs(pos - 10_000) <= 50
        names = counter.cell_names
        assert [int(n) for n in counter.stats["n_unique"]] == [unique[n] for n in names]
        assert [int(n) for n in counter.stats["tss_center"]] == [tss_center[n] for n in names]
        keep = np.ones(len(names), dtype=bool)
        (block,) = counter.store.blocks(keep, 2 * counter.stats["n_main"])
        coo = block.tocoo()
        got = Counter({(names[r], int(c)): int(v) for r, c, v in zip(coo.row, coo.col, coo.data, strict=False)})
        assert got == expected
    finally:
        counter.close()
