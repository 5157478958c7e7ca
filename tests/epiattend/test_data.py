import gzip

import numpy as np
import pandas as pd
import pytest

from atacformer.epiattend.data import (
    EpiData,
    GenomeSequence,
    bin_intervals,
    encode,
    gene_targets,
    one_hot,
    read_bedgraph,
    read_track,
    reverse_complement_codes,
)
from atacformer.epiattend.pseudobulk import pseudobulk_tracks, read_labels
from atacformer.epiattend.windows import WindowDataset, reverse_complement_sample, split_chromosomes, tile_windows
from atacformer.genome import data_path, get_genome


def _fasta(tmp_path, seqs):
    path = tmp_path / "g.fa"
    path.write_text("".join(f">{c}\n{s}\n" for c, s in seqs.items()))
    return path


def test_one_hot_n_is_zeros_and_lowercase_counts():
    x = one_hot(encode("ACGTNacgtR"))
    assert x.shape == (10, 4)
    assert np.array_equal(x[:4], np.eye(4)) and np.array_equal(x[5:9], np.eye(4))
    assert x[4].sum() == 0 and x[9].sum() == 0  # N and IUPAC codes are all-zero rows


def test_genome_sequence_pads_with_n(tmp_path):
    g = GenomeSequence(_fasta(tmp_path, {"chr1": "ACGTACGTAA", "2": "GGGG"}))
    assert g.chrom_sizes == {"chr1": 10, "chr2": 4}  # names normalised
    codes = g.codes("chr1", -2, 3)
    assert codes.tolist() == [4, 4, 0, 1, 2]
    assert g.codes("chr2", 2, 6).tolist() == [2, 2, 4, 4]
    with pytest.raises(ValueError, match="chr9"):
        g.codes("chr9", 0, 2)


def test_reverse_complement_flips_sequence_tracks_and_targets_together(tmp_path):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 1024))
    g = GenomeSequence(_fasta(tmp_path, {"chr1": seq}), in_memory=True)
    tracks = {"chr1": rng.random((1, 2, 8)).astype(np.float32)}
    targets = {"chr1": rng.random((1, 1, 8)).astype(np.float32)}
    data = EpiData(g, tracks, ["ct"], ["a", "b"], targets, transform="none")
    s = data.window("chr1", 0, 1024, 0)
    r = reverse_complement_sample(s)
    # DNA: bin j of the flipped window is the reverse complement of bin 7 - j of the original
    for j in range(8):
        orig = s["codes"][(7 - j) * 128 : (8 - j) * 128]
        assert np.array_equal(r["codes"][j * 128 : (j + 1) * 128], reverse_complement_codes(orig))
        assert np.array_equal(r["epi"][:, j], s["epi"][:, 7 - j])
        assert np.array_equal(r["target"][:, j], s["target"][:, 7 - j])
    twice = reverse_complement_sample(r)
    assert all(np.array_equal(twice[k], s[k]) for k in s)
    # the dataset applies it consistently: with rc on, every sample is the original or the full flip
    ds = WindowDataset(data, pd.DataFrame({"chrom": ["chr1"], "start": [0]}), seq_len=1024, rc=True, seed=1)
    seen = set()
    for _ in range(12):
        x = ds[0]
        flipped = np.array_equal(x["epi"].numpy(), r["epi"])
        assert flipped or np.array_equal(x["epi"].numpy(), s["epi"])
        assert np.array_equal(x["target"].numpy(), (r if flipped else s)["target"])
        assert np.array_equal(x["seq"].numpy(), one_hot((r if flipped else s)["codes"]))
        seen.add(flipped)
    assert seen == {True, False}


def test_window_crop_and_grouped_cells(tmp_path):
    g = GenomeSequence(_fasta(tmp_path, {"chr1": "A" * 2048}), in_memory=True)
    tracks = {"chr1": np.arange(3 * 16, dtype=np.float32).reshape(3, 1, 16)}
    data = EpiData(g, tracks, ["x", "y", "z"], ["atac"], {"chr1": tracks["chr1"].copy()}, transform="none")
    win = pd.DataFrame({"chrom": ["chr1"], "start": [0]})
    ds = WindowDataset(data, win, seq_len=2048, crop=4)
    assert len(ds) == 3 and ds[1]["epi"].shape == (1, 16) and ds[1]["target"].shape == (1, 8)
    assert ds[1]["target"][0, 0] == 16 + 4  # cell type 1, first bin after the crop
    grouped = WindowDataset(data, win, seq_len=2048, crop=4, group_cells=True)
    assert len(grouped) == 1 and grouped[0]["epi"].shape == (3, 1, 16) and grouped[0]["target"].shape == (3, 1, 8)


def test_chromosome_holdout_has_no_leakage():
    sizes = {f"chr{i}": 100_000 for i in range(1, 6)}
    split = split_chromosomes(list(sizes), valid=["chr4"], test=["chr5"])
    assert split["train"] == ["chr1", "chr2", "chr3"]
    wins = {k: tile_windows(sizes, v, seq_len=16384, stride=8192) for k, v in split.items()}
    assert set(wins["train"].chrom) == {"chr1", "chr2", "chr3"}
    assert set(wins["test"].chrom) == {"chr5"} and set(wins["valid"].chrom) == {"chr4"}
    assert (wins["train"].start % 128 == 0).all()
    # tiling covers every output bin: centres step by the stride from before the chromosome start
    centres = wins["train"][wins["train"].chrom == "chr1"].start + 8192
    assert centres.iloc[0] <= 4096 and centres.diff().dropna().eq(8192).all() and centres.iloc[-1] >= 100_000 - 8192
    with pytest.raises(ValueError, match="both"):
        split_chromosomes(list(sizes), valid=["chr4"], test=["chr4"])
    with pytest.raises(ValueError, match="chr9"):
        split_chromosomes(list(sizes), valid=["chr9"], test=[])


def test_bin_intervals_matches_per_base_mean():
    rng = np.random.default_rng(3)
    starts = np.sort(rng.choice(1000, 20, replace=False))
    df = pd.DataFrame({"chrom": "c", "start": starts, "end": starts + rng.integers(1, 60, 20), "value": rng.random(20)})
    got = bin_intervals(df, {"c": 1000}, bin_size=128)["c"]
    bp = np.zeros(1000)
    for s, e, v in zip(df.start, df.end, df.value, strict=False):
        bp[s : min(e, 1000)] += v
    want = [bp[i : i + 128].mean() for i in range(0, 1000, 128)]
    assert np.allclose(got, want, atol=1e-5)


def test_bedgraph_errors_name_file_and_line(tmp_path):
    path = tmp_path / "t.bedGraph"
    path.write_text("track type=bedGraph\nchr1\t0\t10\t1.5\nchr1\t10\tx\t2\n")
    with pytest.raises(ValueError, match=r"t\.bedGraph:3"):
        read_bedgraph(path)


def test_bigwig_and_bedgraph_agree(tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig")
    bw = pyBigWig.open(str(tmp_path / "t.bw"), "w")
    bw.addHeader([("chr1", 1000)])
    bw.addEntries(["chr1", "chr1"], [0, 300], ends=[100, 450], values=[2.0, 4.0])
    bw.close()
    gz = tmp_path / "t.bedGraph.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("chr1\t0\t100\t2\nchr1\t300\t450\t4\n")
    a = read_track(tmp_path / "t.bw", {"chr1": 1000})["chr1"]
    b = read_track(gz, {"chr1": 1000})["chr1"]
    assert (np.allclose(a, b) and np.isclose(a[0], 200 / 128) and np.isclose(a[2], 84 * 4 / 128)
            and np.isclose(a[3], 66 * 4 / 128))


def test_gene_targets_only_at_tss_bins():
    genes = pd.DataFrame({"gene": ["a", "b", "c"], "chrom": ["chr1", "chr1", "chr1"], "tss": [10, 100, 300]})
    values = pd.DataFrame({"x": [1.0, 2.0, 5.0]}, index=["a", "b", "c"])
    t = gene_targets(genes, values, {"chr1": 512}, ["x"])["chr1"]
    assert t.shape == (1, 1, 4)
    assert t[0, 0, 0] == 3.0 and t[0, 0, 2] == 5.0  # a and b share bin 0
    assert np.isnan(t[0, 0, [1, 3]]).all()  # unobserved elsewhere
    with pytest.raises(ValueError, match="y"):
        gene_targets(genes, values, {"chr1": 512}, ["x", "y"])


def test_pseudobulk_matches_brute_force_on_pbsmall():
    frag_path, labels = data_path("pbsmall_fragments_hg19.tsv.gz"), read_labels(data_path("pbsmall_labels.tsv"))
    sizes = {c: get_genome("hg19").chrom_sizes[c] for c in ("chr5", "chr11")}
    tracks, cts = pseudobulk_tracks(frag_path, labels, sizes, chunk_size=1 << 18)  # several chunks
    assert cts == ["B", "Monocyte", "T"]
    frags = pd.read_csv(frag_path, sep="\t", header=None, names=["chrom", "start", "end", "barcode", "count"],
                        comment="#")
    frags["ct"] = frags.barcode.map(labels)
    for chrom in sizes:
        for ci, ct in enumerate(cts):
            f = frags[(frags.chrom == chrom) & (frags.ct == ct)]
            want = np.bincount(np.concatenate([f.start, f.end - 1]) // 128, minlength=tracks[chrom].shape[1])
            assert np.array_equal(tracks[chrom][ci], want)
    assert sum(t.sum() for t in tracks.values()) == 2 * len(frags)


def test_labels_with_duplicates_raise(tmp_path):
    path = tmp_path / "lab.tsv"
    path.write_text("barcode\tcell_type\nA\tx\nA\ty\n")
    with pytest.raises(ValueError, match="more than once"):
        read_labels(path)


def test_read_bed_windows_centres_on_midpoints_and_names_bad_lines(tmp_path):
    from atacformer.epiattend.windows import read_bed_windows

    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t10000\t10200\tA\n1\t20000\t20100\n")
    w = read_bed_windows(bed, seq_len=2048)
    assert w["chrom"].tolist() == ["chr1", "chr1"]
    mids = (w["start"] + 1024).tolist()
    assert all(abs(m - c) < 128 for m, c in zip(mids, [10100, 20050], strict=False))  # centred up to one 128 bp bin
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\tx\t1\n")
    with pytest.raises(ValueError, match="bad.bed:1"):
        read_bed_windows(bad, seq_len=2048)
