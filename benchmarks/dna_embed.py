"""Benchmark: DNA embedding throughput per bin (single CPU core).

k-mer method: ``build_table`` end to end (FASTA read + embed + shards + assembly) on a synthetic random
genome, and the embedding step alone; whole-genome estimate for hg38 (606k 5 kb bins).
NT method on CPU: a tiny random NT-shaped model (what the tests use) and a random model with the shape
of NT v2 50M (12 layers, hidden 512; random weights cost the same as trained ones). GPU figures are
pending: no GPU was lent to the session that wrote this.

    python benchmarks/dna_embed.py [--mbp 20] [--nt-bins 4]
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ[var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from atacformer.dna import GenomeFasta, KmerEmbedder, build_table, nt_embed  # noqa: E402
from atacformer.genome import Genome, get_genome  # noqa: E402

BIN = 5000


def write_genome(d: Path, mbp: float) -> Genome:
    """A random two-chromosome genome (~``mbp`` Mbp, one 5% N gap) as FASTA + chrom sizes."""
    rng = np.random.default_rng(0)
    sizes = {"chr1": int(mbp * 0.6e6) + 1234, "chr2": int(mbp * 0.4e6) + 567}
    with open(d / "bench.fa", "w") as fh:
        for c, n in sizes.items():
            seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)].copy()
            seq[n // 2 : n // 2 + n // 20] = ord("N")
            fh.write(f">{c}\n")
            text = seq.tobytes().decode()
            fh.writelines(text[i : i + 60] + "\n" for i in range(0, n, 60))
    return Genome.from_chrom_sizes(sizes, name="bench")


def bench_kmer(d: Path, mbp: float, dim: int = 256) -> None:
    genome = write_genome(d, mbp)
    n_bins = genome.bins(BIN).n_bins
    cpu = time.process_time()
    GenomeFasta(d / "bench.fa", genome.bins(BIN)).close()  # one-time .fai creation (pyfaidx, pure Python)
    index_cpu = time.process_time() - cpu
    t, cpu = time.perf_counter(), time.process_time()
    build_table(genome, d / "bench.fa", out=d / "kmer", dim=dim, bin_size=BIN)
    build_s, build_cpu = time.perf_counter() - t, time.process_time() - cpu
    seq = open(d / "bench.fa").read().split(">chr2")[0].split("\n", 1)[1].replace("\n", "")
    emb = KmerEmbedder(dim)
    emb.embed_region(seq[: 50 * BIN], BIN)  # warm-up (LUTs, projection)
    t, cpu = time.perf_counter(), time.process_time()
    emb.embed_region(seq, BIN)
    embed_s, embed_cpu = time.perf_counter() - t, time.process_time() - cpu
    n_seq = len(seq) / BIN
    hg38 = get_genome("hg38").bins(BIN).n_bins
    print(f"kmer (dim {dim}, 1 thread): genome {mbp:g} Mbp = {n_bins} bins of {BIN} bp")
    print("  (per core = bins per CPU-second of this single-threaded process; wall = elapsed, lower when the"
          " machine is shared)")
    print(f"  FASTA indexing (.fai, once per FASTA): {mbp / index_cpu:,.0f} Mbp per CPU-second")
    print(f"  build_table end to end (.fai present): {n_bins / build_cpu:,.0f} bins/s per core, "
          f"{n_bins / build_s:,.0f} bins/s wall "
          f"({build_s:.2f} s)")
    print(f"  embedding step alone:   {n_seq / embed_cpu:,.0f} bins/s per core, {n_seq / embed_s:,.0f} bins/s wall")
    print(f"  hg38 estimate ({hg38:,} bins): {hg38 / (n_bins / build_cpu) / 60:.1f} min on one free core "
          f"(+ {3100 / (mbp / index_cpu) / 60:.1f} min to index a 3.1 Gbp FASTA without .fai)")


def tiny_nt_dir(d: Path, *, hidden: int, layers: int, heads: int, ffn: int) -> Path:
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    out = d / f"nt_{hidden}x{layers}"
    out.mkdir()
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=6)]
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", *kmers, "A", "T", "C", "G", "N"]
    (out / "vocab.txt").write_text("\n".join(vocab))
    EsmTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    config = EsmConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=2048,
                       pad_token_id=1, mask_token_id=2, position_embedding_type="rotary", token_dropout=False)
    torch.manual_seed(0)
    EsmForMaskedLM(config).save_pretrained(out)
    return out


def bench_nt(d: Path, n_bins: int) -> None:
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), BIN)) for _ in range(n_bins)]
    hg38 = get_genome("hg38").bins(BIN).n_bins
    for label, shape in (("tiny (hidden 16, 2 layers)", (16, 2, 2, 32)),
                         ("NT-v2-50M-shaped (hidden 512, 12 layers)", (512, 12, 16, 2048))):
        model = tiny_nt_dir(d, hidden=shape[0], layers=shape[1], heads=shape[2], ffn=shape[3])
        nt_embed(seqs[:1], model=model, device="cpu")  # warm-up
        cpu = time.process_time()
        nt_embed(seqs, model=model, device="cpu", batch_size=4)
        rate = n_bins / (time.process_time() - cpu)  # per core (torch limited to one thread)
        print(f"nt CPU, 1 thread, {label}: {rate:,.2f} bins/s per core ({1 / rate:.2f} s/bin); "
              f"hg38 would take {hg38 / rate / 3600:,.1f} core-hours")
    print("nt GPU: pending (no GPU was available to this benchmark run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mbp", type=float, default=20.0, help="size of the synthetic genome for kmer (Mbp)")
    p.add_argument("--nt-bins", type=int, default=4, help="bins embedded per NT model")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_kmer(Path(tmp), args.mbp)
        bench_nt(Path(tmp), args.nt_bins)


if __name__ == "__main__":
    main()
