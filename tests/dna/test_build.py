import json

import numpy as np
import pytest

import atacformer.dna.build as build_mod
from atacformer.dna import GenomeFasta, KmerEmbedder, build_table
from atacformer.genome import Genome
from atacformer.tokenize import BinVocab


def test_build_kmer_table_matches_direct_embedding(toy, tmp_path):
    genome, fasta, seqs = toy
    table = build_table(genome, fasta, out=tmp_path / "tab", dim=32, bin_size=1000, dtype="float32", shard_size=10)
    bins = genome.bins(1000)
    assert len(table) == bins.n_bins == 43 and table.dim == 32
    assert table.bin_names.tolist() == bins.names().tolist()
    assert sorted(p.name for p in (tmp_path / "tab").iterdir()) == ["bins.txt", "embeddings.npy", "meta.json"]
    meta = json.loads((tmp_path / "tab" / "meta.json").read_text())
    assert {"genome": "toy", "bin_size": 1000, "dim": 32, "dtype": "float32", "method": "kmer"}.items() <= meta.items()
    assert {"source_model", "layer", "pooling"} <= meta.keys()
    c, start, end = bins.coords()
    direct = KmerEmbedder(32)([seqs[genome.chroms[ci]][s:e] for ci, s, e in zip(c, start, end, strict=False)])
    assert np.allclose(table.embeddings, direct, atol=1e-5)
    assert not table.embeddings[3].any() and table.embeddings[23].any()  # all-N chr1:3000-4000; partly-N chr2:0-1000
    E = table.aligned(BinVocab(genome, 1000))
    assert table.n_missing == 0 and np.allclose(E[BinVocab(genome, 1000).n_special :], direct, atol=1e-5)


def test_build_is_deterministic_fp16_by_default(toy, tmp_path):
    genome, fasta, _ = toy
    a = build_table(genome, fasta, out=tmp_path / "a", dim=16, bin_size=1000)
    b = build_table(genome, fasta, out=tmp_path / "b", dim=16, bin_size=1000, shard_size=3)
    assert a.dtype == np.float16 and np.array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))


def test_resume_skips_finished_shards(toy, tmp_path, monkeypatch):
    genome, fasta, _ = toy
    calls = []

    class Flaky(KmerEmbedder):
        fail_at = 3

        def embed_region(self, seq, bin_size):
            calls.append(len(seq))
            if len(calls) == self.fail_at:
                raise RuntimeError("interrupted")
            return super().embed_region(seq, bin_size)

    monkeypatch.setattr(build_mod, "KmerEmbedder", Flaky)
    out = tmp_path / "tab"
    with pytest.raises(RuntimeError, match="interrupted"):
        build_table(genome, fasta, out=out, dim=16, bin_size=1000, shard_size=10)  # 5 shards, 6 chrom pieces
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["000000000.npy", "000000010.npy"]
    assert not (out / "meta.json").exists()
    with pytest.raises(ValueError, match="other settings.*dim=16"):
        build_table(genome, fasta, out=out, dim=24, bin_size=1000, shard_size=10)
    calls.clear()
    Flaky.fail_at = -1
    table = build_table(genome, fasta, out=out, dim=16, bin_size=1000, shard_size=10)
    assert sum(calls) == 43_000 - 20_000 - 500  # only bins 20.. were embedded again (last chrX bin is 500 bp)
    assert not (out / "shards").exists() and not (out / "build.json").exists()
    fresh = build_table(genome, fasta, out=tmp_path / "fresh", dim=16, bin_size=1000)
    assert np.array_equal(np.asarray(table.embeddings), np.asarray(fresh.embeddings))
    calls.clear()
    build_table(genome, fasta, out=out, dim=16, bin_size=1000, shard_size=10)  # complete: nothing to do
    assert calls == []


def test_fasta_checks(toy, tmp_path):
    genome, fasta, seqs = toy
    bins = genome.bins(1000)
    fa = GenomeFasta(fasta, bins)
    assert fa.bin_sequences([0])[0] == seqs["chr1"][:1000]
    assert [(b, n) for b, n, _ in fa.bins_region(20, 40)] == [(20, 3), (23, 12), (35, 5)]
    longer = Genome.from_chrom_sizes({"chr1": 23_000, "chr2": 12_001, "chrX": 7_500}, name="other")
    with pytest.raises(ValueError, match="chr2 is 12000 bp in the FASTA but 12001 bp.*another assembly"):
        GenomeFasta(fasta, longer.bins(1000))
    more = Genome.from_chrom_sizes({"chr1": 23_000, "chr3": 5000}, name="other")
    with pytest.raises(ValueError, match="chromosome chr3 of genome 'other' is not in the FASTA"):
        GenomeFasta(fasta, more.bins(1000))
    (tmp_path / "g.fa.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="compressed FASTA"):
        GenomeFasta(tmp_path / "g.fa.gz", bins)
    with pytest.raises(ValueError, match="needs --model"):
        build_table(genome, fasta, out=tmp_path / "x", method="nt")
    with pytest.raises(ValueError, match="unknown method"):
        build_table(genome, fasta, out=tmp_path / "x", method="bert")
