"""Genome-build check: is the data on the genome it is being ingested on (hg19 vs hg38 vs mm10)?

Two kinds of evidence, from a sample of the data's positions (Tn5 insertions, region midpoints):

- positions past a chromosome's end: impossible on the right build;
- the fraction of positions within :data:`WINDOW` bp of a TSS of each built-in genome: chromatin
  accessibility is strongly enriched at promoters, so the right build has by far the highest fraction
  (ingesting hg19 fragments on hg38 drops it about 3-fold; on another species to background).

:func:`check_build` raises a ``ValueError`` naming the likely build unless ``force`` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..genome import BUILTIN_GENOMES, Genome, get_genome

logger = logging.getLogger(__name__)

WINDOW = 1000  # bp either side of a TSS
MIN_NEAR = 20  # sampled positions near a TSS of the better build before it is trusted
RATIO = 2.0  # the better build must have at least this many times the TSS fraction of the chosen one
MAX_PAST_END = 1e-3  # tolerated fraction of positions past their chromosome's end (if more than MIN_PAST)
MIN_PAST = 3  # fewer positions past the end are dropped with a warning (sloppy peak extension, not a build)
MAX_SAMPLE = 200_000


@lru_cache(maxsize=4)
def _tss(name: str) -> dict[str, np.ndarray]:
    """Sorted TSS positions per chromosome of a built-in genome."""
    genes = get_genome(name).genes()
    return {c: np.sort(g["tss"].to_numpy(np.int64)) for c, g in genes.groupby("chrom", observed=True)}


def near_tss(genome: Genome, chroms: np.ndarray, pos: np.ndarray, tss: dict[str, np.ndarray]) -> int:
    """How many (chrom, pos) lie within :data:`WINDOW` bp of a TSS (chrom names normalised by ``genome``)."""
    n = 0
    for c in np.unique(chroms):
        i = genome.chrom_index(str(c))
        t = tss.get(genome.chroms[i]) if i is not None else None
        if t is None or t.size == 0:
            continue
        p = pos[chroms == c]
        j = np.searchsorted(t, p)
        left, right = t[np.clip(j - 1, 0, t.size - 1)], t[np.clip(j, 0, t.size - 1)]
        d = np.minimum(np.abs(p - left), np.abs(p - right))
        n += int((d <= WINDOW).sum())
    return n


def past_end(genome: Genome, chroms: np.ndarray, pos: np.ndarray) -> int:
    """How many (chrom, pos) lie on a chromosome of ``genome`` but past its end."""
    n = 0
    for c in np.unique(chroms):
        i = genome.chrom_index(str(c))
        if i is not None:
            n += int((pos[chroms == c] >= genome.chrom_sizes[genome.chroms[i]]).sum())
    return n


@dataclass
class PositionSample:
    """A bounded, evenly spread sample of (contig name, position) pairs, filled block by block."""

    per_block: int = 4096
    chroms: list | None = None
    pos: list | None = None

    def add(self, names: list[str], codes: np.ndarray, pos: np.ndarray) -> None:
        """names: the block's contig names; codes: (n,) index into ``names``; pos: (n,) positions."""
        if self.chroms is None:
            self.chroms, self.pos = [], []
        if pos.size == 0:
            return
        idx = np.linspace(0, pos.size - 1, min(self.per_block, pos.size)).astype(np.int64)
        self.chroms.append(np.asarray(names, dtype=object)[codes[idx]])
        self.pos.append(np.asarray(pos[idx], dtype=np.int64))
        if sum(p.size for p in self.pos) > 2 * MAX_SAMPLE:  # thin out: every other one
            self.chroms = [np.concatenate(self.chroms)[::2]]
            self.pos = [np.concatenate(self.pos)[::2]]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.pos:
            return np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
        return np.concatenate(self.chroms).astype(str), np.concatenate(self.pos)


def _builtin_name(genome: Genome) -> str | None:
    name = genome.name.lower()
    if name in BUILTIN_GENOMES and get_genome(name).chrom_sizes == genome.chrom_sizes:
        return name
    return None


def build_scores(chroms: np.ndarray, pos: np.ndarray) -> dict[str, tuple[float, int, int]]:
    """Per built-in genome: (fraction near a TSS, number near, number past a chromosome end)."""
    out = {}
    for name in BUILTIN_GENOMES:
        g = get_genome(name)
        near = near_tss(g, chroms, pos, _tss(name))
        out[name] = (near / max(pos.size, 1), near, past_end(g, chroms, pos))
    return out


def check_build(genome: Genome, chroms: np.ndarray, pos: np.ndarray, *, n_past_end: int, n_total: int,
                what: str, force: bool = False) -> dict:
    """Raise ``ValueError`` if the sample (chroms, pos) fits another built-in genome much better than
    ``genome``, or if more than :data:`MAX_PAST_END` of the data (``n_past_end`` of ``n_total``) lies past
    chromosome ends; with ``force`` only warn. Returns the evidence for ``uns['ingest']``."""
    chosen = _builtin_name(genome)
    scores = build_scores(chroms, pos) if chosen is not None and pos.size else {}
    report = {"n_past_chrom_end": int(n_past_end)}
    report.update({f"frac_near_tss_{k}": round(v[0], 4) for k, v in scores.items()})
    problem = None
    if scores:
        best = max(scores, key=lambda k: (scores[k][0], -scores[k][2]))
        frac, near, _ = scores[best]
        if best != chosen and near >= MIN_NEAR and frac >= RATIO * scores[chosen][0]:
            why = (f"they look like genome {best!r}, not {chosen!r}: {frac:.0%} of sampled positions lie "
                   f"within {WINDOW} bp of a {best} TSS vs {scores[chosen][0]:.0%} for {chosen}")
            problem = (why, best)
    if problem is None and n_past_end >= MIN_PAST and n_past_end > MAX_PAST_END * n_total:
        fits = [k for k, v in scores.items() if k != chosen and v[2] == 0]
        hint = max(fits, key=lambda k: scores[k][0]) if fits else None
        why = f"{n_past_end} of {n_total} lie past the end of their chromosome in genome {genome.name!r}"
        problem = (why, hint)
    if problem is not None:
        why, hint = problem
        advice = f"pass --genome {hint}" if hint else "pass the right --genome (or a chrom-sizes file)"
        msg = f"{what}: wrong genome build? {why}; {advice}, or --force-genome to ingest on {genome.name!r} anyway"
        if not force:
            raise ValueError(msg)
        logger.warning("%s (--force-genome given: ingesting anyway)", msg)
    return report
