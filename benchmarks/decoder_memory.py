"""Peak memory of one 3-state decoder step (forward + backward) over a whole genome, batch 8, d = 512.

Each configuration runs in a fresh subprocess; the figure is the growth of the process's peak resident
memory (``ru_maxrss``) during the step, so it counts everything the step allocates: the E1 gradient
(n_bins × 64), the eos gradient and the chunk activations. "activations" subtracts the E1 gradient,
which every optimiser needs anyway. Genomes: chr1 of hg38 (50k bins), hg38 (606k bins), and hg38
doubled (1.2M bins) to show the activation peak does not grow with the bin count; the last line is
the unchunked decoder (chunk = all bins) on chr1 only, for contrast.

    python benchmarks/decoder_memory.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from atacformer.genome import Genome, get_genome
from atacformer.models import AtacformerConfig, collate_cells
from atacformer.models.decoder import StateDecoder
from atacformer.tokenize import BinVocab


def genome_for(name: str) -> Genome:
    hg38 = get_genome("hg38")
    if name == "hg38":
        return hg38
    if name == "hg38-chr1":
        return Genome.from_chrom_sizes({"chr1": hg38.chrom_sizes["chr1"]}, name="hg38-chr1")
    if name == "hg38x2":
        return Genome.from_chrom_sizes({c: 2 * n for c, n in hg38.chrom_sizes.items()}, name="hg38x2")
    raise ValueError(f"unknown genome {name!r}")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def child(genome: str, chunk: int | None, batch_size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    vocab = BinVocab(genome_for(genome), 5000)
    cfg = AtacformerConfig.from_preset("base", vocab, decoder_chunk_size=chunk or vocab.n_bins)
    chroms = torch.repeat_interleave(torch.arange(vocab.n_chroms), torch.from_numpy(vocab.bins.n_bins_per_chrom))
    decoder = StateDecoder(cfg, chroms)
    rng = np.random.default_rng(0)
    n_open = min(4000, vocab.n_bins // 4)
    cells = [{"bin_ids": rng.choice(vocab.n_bins, size=n_open, replace=False)} for _ in range(batch_size)]
    batch = collate_cells(cells, vocab, rng=rng)
    e1 = torch.nn.Parameter(torch.randn(vocab.n_bins, cfg.k))  # (n_bins, k): the bin rows of E1
    eos = torch.randn(batch_size, vocab.n_chroms, cfg.d_model, requires_grad=True)  # (B, C, d) encoder outputs
    args = (batch.target_cell, batch.target_bin, batch.target_state)
    before = rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = decoder(eos, e1, *args)
    out.loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grad_mb = e1.numel() * 4 / 2**20
    return {"genome": genome, "n_bins": vocab.n_bins, "chunk": cfg.decoder_chunk_size, "batch": batch_size,
            "step_peak_mb": max(peak, peak_before) - before, "e1_grad_mb": grad_mb, "seconds": seconds,
            "loss": out.loss.item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("GENOME", "CHUNK"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.child:
        chunk = int(a.child[1]) or None
        print(json.dumps(child(a.child[0], chunk, a.batch, a.threads)))
        return
    print(f"decoder step (forward+backward), batch {a.batch}, d=512, eos 64 + E1 64 -> 256 -> 3, "
          f"torch {torch.__version__}, {a.threads} threads")
    runs = [("hg38-chr1", 4096), ("hg38", 4096), ("hg38x2", 4096), ("hg38-chr1", 0)]
    for genome, chunk in runs:
        res = subprocess.run([sys.executable, __file__, "--child", genome, str(chunk), "--batch", str(a.batch),
                              "--threads", str(a.threads)], capture_output=True, text=True)
        if res.returncode:
            print(f"  {genome}, chunk {chunk or 'all'}: failed ({res.stderr.strip().splitlines()[-1]})")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        act = r["step_peak_mb"] - r["e1_grad_mb"]
        print(f"  {r['genome']:10s} {r['n_bins']:>9,d} bins, chunk {r['chunk']:>7,d}: step peak "
              f"{r['step_peak_mb']:7.0f} MB (E1 grad {r['e1_grad_mb']:4.0f} MB, activations {act:6.0f} MB), "
              f"{r['seconds']:6.1f} s")


if __name__ == "__main__":
    main()
