"""A synthetic genome with a known enhancer → gene wiring, for validating EpiAttend.

The grammar (what a model has to learn from sequence + accessibility):

* A gene is *responsive* (promoter motif ``P``) or *housekeeping* (promoter motif ``Q``); every
  promoter is equally open in every cell type.
* Candidate regulatory regions (CREs) between genes are open in a random subset of cell types. An
  *enhancer* carries motif ``E``; a *decoy* carries an unrelated motif ``D``.
* Expression of a housekeeping gene is ``housekeeping`` (2) everywhere; of a responsive gene in cell
  type ``c`` it is ``1 + gain * sum(accessibility(e, c))`` over the enhancers within ``max_distance`` of its TSS, with
  multiplicative noise (log-normal, sd ``noise``). An enhancer therefore skips a nearer housekeeping
  gene to drive a farther responsive one, and a nearer, equally open decoy has no effect.

So the true links are neither the nearest nor the most accessible regions: distance and ABC
(activity / distance) baselines are beatable, but only by reading the motifs. The model's inputs
are the DNA sequence and the accessibility tracks; classes, region kinds and links are never inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_path, write_text

BASES = np.array(list("ACGT"))


@dataclass
class SimulatedGenome:
    """Sequences, accessibility counts, genes, candidate regions and the planted links."""

    sequences: dict[str, str]
    atac: dict[str, np.ndarray]  # chrom -> (n_cell_types, n_bins) insertion counts per 128 bp bin
    genes: pd.DataFrame  # gene, chrom, tss, klass (1 = responsive)
    expression: pd.DataFrame  # genes x cell types (index gene)
    regions: pd.DataFrame  # region, chrom, start, end, kind, klass (1 = enhancer) + accessibility per cell type
    truth: pd.DataFrame  # gene, region, distance, linked: every candidate pair within max_distance
    motifs: dict[str, str]
    cell_types: list[str]
    bin_size: int = 128

    @property
    def chrom_sizes(self) -> dict[str, int]:
        return {c: len(s) for c, s in self.sequences.items()}

    def write(self, outdir: str | Path) -> dict[str, Path]:
        """Write ``genome.fa``, one ``atac_<cell type>.bedGraph`` each, ``tracks.tsv`` (manifest),
        ``expression.tsv`` (gene, chrom, tss, one column per cell type), ``regions.bed`` (candidate
        coordinates only) and ``truth.tsv``. Returns the paths by name."""
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"fasta": out / "genome.fa", "tracks": out / "tracks.tsv", "expression": out / "expression.tsv",
                 "regions": out / "regions.bed", "truth": out / "truth.tsv"}
        lines = []
        for chrom, seq in self.sequences.items():
            lines.append(f">{chrom}\n")
            lines += [seq[i : i + 80] + "\n" for i in range(0, len(seq), 80)]
        write_text(paths["fasta"], "".join(lines))
        paths["fasta"].with_name(paths["fasta"].name + ".fai").unlink(missing_ok=True)  # stale index
        manifest = []
        for ci, ct in enumerate(self.cell_types):
            rows = []
            for chrom, counts in self.atac.items():
                size = len(self.sequences[chrom])
                for b in np.flatnonzero(counts[ci]):
                    rows.append(f"{chrom}\t{b * self.bin_size}\t{min((b + 1) * self.bin_size, size)}\t"
                                f"{counts[ci, b]:g}\n")
            path = out / f"atac_{ct}.bedGraph"
            write_text(path, "".join(rows))
            manifest.append({"cell_type": ct, "channel": "atac", "path": path.name})
        _atomic_table(pd.DataFrame(manifest), paths["tracks"])
        expr = self.genes[["gene", "chrom", "tss"]].merge(self.expression, left_on="gene", right_index=True)
        _atomic_table(expr, paths["expression"])
        _atomic_table(self.regions[["chrom", "start", "end", "region"]], paths["regions"], header=False)
        _atomic_table(self.truth, paths["truth"])
        return paths


def _atomic_table(df: pd.DataFrame, path: Path, *, header: bool = True) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, header=header)


def _plant(seq: np.ndarray, motif: str, lo: int, hi: int, copies: int, rng: np.random.Generator) -> None:
    """Write ``copies`` non-overlapping copies of ``motif`` into ``seq[lo:hi]``, evenly spread."""
    m = np.array(list(motif))
    slots = np.linspace(lo, hi - len(m), copies).astype(int)
    for s in slots:
        s = int(np.clip(s + rng.integers(-3, 4), lo, hi - len(m)))
        seq[s : s + len(m)] = m


@dataclass(frozen=True)
class GenomeSpec:
    """Shape and grammar of the simulated genome (module docstring).

    Parameters
    ----------
    n_chroms, chrom_len
        Number and length (bp) of chromosomes.
    n_cell_types
        Cell types (one accessibility track and one expression column each).
    max_distance
        An enhancer drives the responsive genes whose TSS is within this many bp.
    gene_gap
        Range of the spacing (bp) between consecutive TSSs.
    cre_width
        Width (bp) of each candidate regulatory region.
    p_decoy, p_responsive
        Probability that a CRE is a decoy, and that a gene is responsive.
    gain, housekeeping, noise
        Expression model: ``1 + gain * sum(accessibility)`` for responsive genes, ``housekeeping``
        otherwise, with log-normal noise of sd ``noise``.
    motif_len, motif_copies
        Length of the planted motifs and copies per CRE.
    """

    n_chroms: int = 8
    chrom_len: int = 200_000
    n_cell_types: int = 4
    max_distance: int = 4_000
    gene_gap: tuple[int, int] = (1_500, 4_500)
    cre_width: int = 256
    p_decoy: float = 0.5
    p_responsive: float = 0.5
    gain: float = 4.0
    housekeeping: float = 2.0
    noise: float = 0.1
    motif_len: int = 12
    motif_copies: int = 3


def simulate_genome(spec: GenomeSpec | None = None, *, seed: int = 0) -> SimulatedGenome:
    """Simulate the genome described in the module docstring.

    Genes are spaced ``spec.gene_gap`` bp apart and responsive with probability ``spec.p_responsive``;
    each gap holds 1-3 CREs of ``spec.cre_width`` bp (decoys with probability ``spec.p_decoy``, else
    enhancers). Accessibility per cell type is ``U(0.6, 1.4)`` with probability 1/2 (at least one cell
    type open), else 0.05; ATAC counts per 128 bp bin are ``Poisson(1 + 25 * accessibility)`` over the
    element and ``Poisson(1)`` elsewhere.

    Parameters
    ----------
    spec
        :class:`GenomeSpec` (default: 8 chromosomes of 200 kb, 4 cell types).
    seed
        Seeds the sequences, the wiring and the noise.

    Returns
    -------
    The :class:`SimulatedGenome` (``write`` puts it on disk).
    """
    spec = spec or GenomeSpec()
    rng = np.random.default_rng(seed)
    motifs = {name: "".join(rng.choice(BASES, spec.motif_len)) for name in ("P", "Q", "E", "D")}
    cell_types = [f"ct{i}" for i in range(spec.n_cell_types)]
    sequences, atac, genes, regions = {}, {}, [], []
    for ci in range(spec.n_chroms):
        chrom = f"chr{ci + 1}"
        sequences[chrom], atac[chrom] = _simulate_chromosome(chrom, spec, motifs, rng, genes, regions)
    genes_df = pd.DataFrame(genes, columns=["gene", "chrom", "tss", "klass"])
    regions_df = pd.DataFrame(regions, columns=["region", "chrom", "start", "end", "kind", "klass", *cell_types])
    truth = _candidate_pairs(genes_df, regions_df, spec.max_distance)
    expression = _expression(genes_df, regions_df, truth, cell_types, spec.gain, spec.housekeeping, spec.noise,
                             rng)
    return SimulatedGenome(sequences, atac, genes_df, expression, regions_df, truth, motifs, cell_types, _BIN)


_BIN = 128  # bp per accessibility bin


def _simulate_chromosome(chrom: str, spec: GenomeSpec, motifs: dict, rng: np.random.Generator,
                         genes: list, regions: list) -> tuple[str, np.ndarray]:
    """One chromosome's sequence and (n_cell_types, n_bins) ATAC counts; appends its genes and CREs."""
    seq = rng.choice(BASES, spec.chrom_len)
    acc_bins = np.zeros((spec.n_cell_types, -(-spec.chrom_len // _BIN)))
    tss_list, pos = [], int(rng.integers(*spec.gene_gap))
    while pos < spec.chrom_len - 1_000:
        tss_list.append(pos)
        pos += int(rng.integers(*spec.gene_gap))
    for g, tss in enumerate(tss_list):
        klass = int(rng.random() < spec.p_responsive)  # 1 = responsive
        _plant(seq, motifs["P" if klass else "Q"], tss - 150, tss + 150, 2, rng)
        _open(acc_bins, tss - 150, tss + 150, np.ones(spec.n_cell_types), _BIN)
        genes.append((f"{chrom}_g{g}", chrom, tss, klass))
    bounds = [0] + tss_list + [spec.chrom_len]
    width = spec.cre_width
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        lo, hi = a + 500, b - 500 - width
        n = int(rng.integers(1, 4))
        if hi - lo < n * (width + 200):
            continue
        for s in np.sort(rng.choice(np.arange(lo, hi, width + 200), n, replace=False)):
            s = int(s + rng.integers(0, 100))
            kind = "decoy" if rng.random() < spec.p_decoy else "enhancer"
            klass = int(kind == "enhancer")
            _plant(seq, motifs["E" if klass else "D"], s, s + width, spec.motif_copies, rng)
            on = rng.random(spec.n_cell_types) < 0.5
            on[rng.integers(spec.n_cell_types)] |= not on.any()
            acc = np.where(on, rng.uniform(0.6, 1.4, spec.n_cell_types), 0.05)
            _open(acc_bins, s, s + width, acc, _BIN)
            regions.append((f"{chrom}:{s}-{s + width}", chrom, s, s + width, kind, klass, *acc))
    return "".join(seq), rng.poisson(1.0 + 25.0 * acc_bins).astype(np.float32)


def _open(acc_bins: np.ndarray, start: int, end: int, acc: np.ndarray, bin_size: int) -> None:
    """Add accessibility ``acc`` (per cell type) to the bins overlapping ``[start, end)``, by overlap."""
    for b in range(start // bin_size, (end - 1) // bin_size + 1):
        frac = (min(end, (b + 1) * bin_size) - max(start, b * bin_size)) / bin_size
        acc_bins[:, b] += frac * acc


def _candidate_pairs(genes: pd.DataFrame, regions: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """All (gene, region) pairs with the region centre within ``max_distance`` of the TSS, labelled."""
    rows = []
    for chrom, g in genes.groupby("chrom", sort=False):
        r = regions[regions.chrom == chrom]
        centre = ((r.start + r.end) // 2).to_numpy()
        for gene, tss, klass in zip(g.gene, g.tss, g.klass, strict=False):
            d = centre - tss
            for i in np.flatnonzero(np.abs(d) <= max_distance):
                rr = r.iloc[i]
                # a region is "skipped over" when another gene's TSS lies between it and this gene
                between = ((g.tss > min(tss, centre[i])) & (g.tss < max(tss, centre[i]))).sum()
                rows.append((gene, rr.region, int(d[i]), bool(rr.klass == 1 and klass == 1), int(between)))
    return pd.DataFrame(rows, columns=["gene", "region", "distance", "linked", "genes_between"])


def _expression(genes, regions, truth, cell_types, gain, housekeeping, noise, rng) -> pd.DataFrame:
    acc = regions.set_index("region")[cell_types]
    base = np.where(genes.klass.to_numpy() == 1, 1.0, housekeeping)[:, None]
    expr = pd.DataFrame(np.repeat(base, len(cell_types), axis=1), index=genes.gene, columns=cell_types)
    links = truth[truth.linked]
    drive = acc.loc[links.region].to_numpy() * gain  # (n_links, C)
    summed = pd.DataFrame(drive, index=links.gene.to_numpy(), columns=cell_types).groupby(level=0).sum()
    expr.loc[summed.index] += summed
    return expr * np.exp(rng.normal(0.0, noise, expr.shape))
