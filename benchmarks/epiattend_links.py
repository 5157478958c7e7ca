"""EpiAttend validation on a synthetic genome with planted enhancer → gene links.

Simulates a genome (``atacformer.epiattend.simulate``), writes it to files (FASTA, bedGraph ATAC tracks
per cell type, expression table, candidate regions), trains a ``tiny`` EpiAttend on CPU on all
chromosomes but two held-out ones, then reports on the held-out chromosomes:

* Pearson r of predicted vs observed expression (log1p), over genes x cell types, and of the
  cell-type-specific part (each gene's deviation from its mean over cell types);
* AUROC of the planted links among all gene–candidate pairs within ``max_distance``: EpiAttend
  gradient x input (ATAC channel), EpiAttend attention, the distance baseline and ABC
  (activity / distance), all computed in this run; and the AUROC on pairs that skip over a gene.

    python benchmarks/epiattend_links.py [--steps 2000] [--ablations]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import numpy as np
import torch

from atacformer.epiattend import (
    GenomeSpec,
    add_baselines,
    get_config,
    link_auroc,
    link_scores,
    pearson,
    predict_genes,
    simulate_genome,
    summarize_links,
)
from atacformer.epiattend.inputs import load_data, read_regions
from atacformer.epiattend.train import train_on_chromosomes

TEST = ["chr7", "chr8"]


def expression_figures(model, data, genes) -> dict[str, float]:
    pred = predict_genes(model, data, genes)
    obs, hat = np.log1p(pred.observed.to_numpy()), np.log1p(pred.predicted.to_numpy())
    dev = lambda v: v - pred.assign(v=v).groupby("gene").v.transform("mean").to_numpy()  # noqa: E731
    return {"pearson": pearson(obs, hat), "pearson_celltype_specific": pearson(dev(obs), dev(hat))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chrom-len", type=int, default=400_000, help="bp per simulated chromosome (8 chromosomes)")
    ap.add_argument("--batch-size", type=int, default=4, help="windows per step (each with all 4 cell types)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--motif-copies", type=int, default=3, help="motif copies planted per enhancer/decoy")
    ap.add_argument("--motif-len", type=int, default=12)
    ap.add_argument("--p-decoy", type=float, default=0.5, help="fraction of candidate regions that are decoys")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core VM)")
    ap.add_argument("--ablations", action="store_true", help="also train epigenome-only and sequence-only models")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    sim = simulate_genome(GenomeSpec(chrom_len=args.chrom_len, motif_copies=args.motif_copies,
                                     motif_len=args.motif_len, p_decoy=args.p_decoy), seed=args.seed)
    tmp = tempfile.TemporaryDirectory()
    paths = sim.write(tmp.name)
    data, genes = load_data(paths["fasta"], tracks=paths["tracks"], expression=paths["expression"])
    regions = read_regions(paths["regions"])
    test_genes = genes[genes.chrom.isin(TEST)].reset_index(drop=True)
    truth = sim.truth
    t = truth[truth.gene.isin(test_genes.gene)]
    print(f"genome: {len(sim.sequences)} x {len(next(iter(sim.sequences.values()))):,} bp, {len(genes)} genes, "
          f"{len(regions)} candidate regions, {len(sim.cell_types)} cell types; held out {','.join(TEST)}: "
          f"{len(test_genes)} genes, {len(t)} candidate pairs, {int(t.linked.sum())} planted links "
          f"({int((t.linked & (t.genes_between > 0)).sum())} skip a nearer gene)  [{time.time() - t0:.0f}s]")
    figures: dict = {k: v for k, v in vars(args).items() if k != "json"}
    modes = ["both", "epigenome", "sequence"] if args.ablations else ["both"]
    for mode in modes:
        cfg = get_config("tiny", mode=mode)
        t1 = time.time()
        model, result = train_on_chromosomes(data, cfg, valid=[], test=TEST, steps=args.steps, seed=args.seed,
                                             batch_size=args.batch_size, lr=args.lr)
        train_s = time.time() - t1
        fig = {"train_seconds": round(train_s, 1), "loss_first50": float(np.mean(result.train_loss[:50])),
               "loss_last50": float(np.mean(result.train_loss[-50:])), **expression_figures(model, data, test_genes)}
        line = (f"[{mode}] trained {args.steps} steps in {train_s:.0f}s (loss {fig['loss_first50']:.3f} -> "
                f"{fig['loss_last50']:.3f}); held-out expression Pearson {fig['pearson']:.3f} "
                f"(cell-type-specific part {fig['pearson_celltype_specific']:.3f})")
        if cfg.uses_epigenome:
            t2 = time.time()
            links = add_baselines(link_scores(model, data, test_genes, regions, max_distance=4000))
            summary = summarize_links(links)
            fig["auroc"] = link_auroc(summary, truth)
            skip = truth[truth.genes_between > 0]
            fig["auroc_skipping_pairs"] = link_auroc(summary, skip)
            fig["links_seconds"] = round(time.time() - t2, 1)
            a, s = fig["auroc"], fig["auroc_skipping_pairs"]
            line += (f"\n    link AUROC: gradient x input {a['score']:.3f} | attention {a['attention']:.3f} | "
                     f"distance {a['distance_score']:.3f} | ABC {a['abc_score']:.3f}"
                     f"\n    pairs that skip a nearer gene: gradient x input {s['score']:.3f} | distance "
                     f"{s['distance_score']:.3f} | ABC {s['abc_score']:.3f}")
        print(line, flush=True)
        figures[mode] = fig
    total = time.time() - t0
    figures["total_seconds"] = round(total, 1)
    both = figures["both"]["auroc"]
    ok = both["score"] >= 0.9 and both["score"] > max(both["distance_score"], both["abc_score"])
    print(f"total {total:.0f}s; target AUROC >= 0.9 above both baselines: {'MET' if ok else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    tmp.cleanup()


if __name__ == "__main__":
    main()
