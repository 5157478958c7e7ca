import gzip
import threading

import numpy as np
import pytest

from atacformer.genome import data_path
from atacformer.io import iter_fragments


def _records(chunks):
    out = []
    for c in chunks:
        for i in range(len(c)):
            out.append((c.chrom_names[c.chrom_codes[i]], int(c.start[i]), int(c.end[i]),
                        c.barcode_names[c.barcode_codes[i]], int(c.count[i])))
    return out


def test_plain_gzip_and_headers_give_same_records(tmp_path):
    text = "# id=1\n# pipeline=cellranger\nchr1\t10\t120\tAA-1\t2\nchr2\t5\t90\tCC-1\t1\nchr1\t3\t50\tAA-1\t1\n"
    plain, gz = tmp_path / "f.tsv", tmp_path / "f.tsv.gz"
    plain.write_text(text)
    with gzip.open(gz, "wt") as fh:
        fh.write(text)
    recs = _records(iter_fragments(plain))
    assert recs == [("chr1", 10, 120, "AA-1", 2), ("chr2", 5, 90, "CC-1", 1), ("chr1", 3, 50, "AA-1", 1)]
    assert _records(iter_fragments(gz)) == recs
    first = next(iter(iter_fragments(plain)))
    assert first.first_line == 3
    assert first.chrom_codes.dtype == np.int32 and first.start.dtype == np.int32 and first.count.dtype == np.int32


def test_positions_beyond_int32_stay_exact(tmp_path):
    p = tmp_path / "big.tsv"
    p.write_text(f"chr1\t{2**31 + 5}\t{2**31 + 90}\tAA-1\t1\nchr1\t7\t70\tAA-1\t1\n")
    (chunk,) = iter_fragments(p)
    assert chunk.start.dtype == np.int64 and chunk.start.tolist() == [2**31 + 5, 7]


def test_four_columns_get_count_one_and_small_chunks_keep_line_numbers(tmp_path):
    lines = [f"chr1\t{i}\t{i + 100}\tB{i % 3}\n" for i in range(2000)]
    p = tmp_path / "f.tsv"
    p.write_text("".join(lines))
    chunks = list(iter_fragments(p, chunk_size=4096))
    assert len(chunks) > 3
    assert sum(len(c) for c in chunks) == 2000
    assert all(int(c.count.sum()) == len(c) for c in chunks)
    for c in chunks:  # first_line points at the record itself
        assert lines[c.first_line - 1].split("\t")[1] == str(int(c.start[0]))


def test_multi_member_bgzip_like_file(tmp_path):
    p = tmp_path / "f.tsv.gz"
    with open(p, "wb") as fh:
        fh.write(gzip.compress(b"chr1\t1\t10\tA\t1\n"))
        fh.write(gzip.compress(b"chr1\t2\t20\tB\t1\n"))
    assert [r[3] for r in _records(iter_fragments(p))] == ["A", "B"]


@pytest.mark.parametrize("bad,problem", [
    ("chr1\t5\t20\tB\n", "columns"),
    ("chr1\tx\t20\tB\t1\n", "integers"),
    ("chr1\t50\t20\tB\t1\n", "start < end"),
    ("chr1\t5\t20\tB\t0\n", "count"),
])
def test_malformed_line_names_file_line_and_text(tmp_path, bad, problem):
    p = tmp_path / "bad.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("#header\n" + "chr1\t1\t10\tA\t1\n" * 5 + bad + "chr1\t1\t10\tA\t1\n")
    with pytest.raises(ValueError) as exc:
        for _ in iter_fragments(p):
            pass
    msg = str(exc.value)
    assert "bad.tsv.gz" in msg and "line 7" in msg and problem in msg and repr(bad.rstrip("\n")) in msg


def test_barcode_that_is_not_utf8_names_its_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_bytes(b"chr1\t1\t10\tA\t1\n" * 3 + b"chr1\t5\t20\tB\xff\t1\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 4: .*UTF-8"):
        list(iter_fragments(p))


def test_truncated_gzip_is_a_clear_error(tmp_path):
    full = tmp_path / "full.tsv.gz"
    with gzip.open(full, "wt") as fh:
        for i in range(20000):
            fh.write(f"chr1\t{i}\t{i + 80}\tCELL{i % 97}\t1\n")
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.tsv\.gz.*truncated"):
        for _ in iter_fragments(cut):
            pass


def test_shipped_pbsmall_fragments():
    chunks = list(iter_fragments(data_path("pbsmall_fragments_hg19.tsv.gz")))
    assert sum(len(c) for c in chunks) == 29399
    names = {n for c in chunks for n in c.barcode_names}
    assert len(names) == 150 and "B.1" in names


def test_header_only_file_yields_nothing(tmp_path):
    p = tmp_path / "empty.tsv"
    p.write_text("# nothing here\n")
    assert list(iter_fragments(p)) == []


def test_stopping_early_ends_the_reader_threads(tmp_path):
    p = tmp_path / "f.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.writelines(f"chr1\t{i}\t{i + 150}\tB{i % 7}\t1\n" for i in range(20_000))
    before = threading.active_count()
    chunks = iter_fragments(p, chunk_size=4096)
    first = next(chunks)
    assert len(first) > 0 and threading.active_count() > before  # decompress + parse threads running
    chunks.close()
    assert threading.active_count() == before


def test_kept_chunks_survive_the_reuse_of_read_buffers(tmp_path):
    rows = [("chr1" if i % 3 else "chr2", i * 7, i * 7 + 50 + i % 40, f"BC{i % 11}-1", 1 + i % 2) for i in range(3000)]
    p = tmp_path / "f.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("#h\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    chunks = list(iter_fragments(p, chunk_size=2048))  # ~50 blocks through a ring of 5 buffers
    assert len(chunks) > 20 and _records(chunks) == rows
    assert [c.first_line for c in chunks[:2]] == [2, 2 + len(chunks[0])]
