"""EpiAttend inputs: genome sequence (FASTA), epigenome tracks at 128 bp (bigWig / bedGraph /
pseudo-bulk arrays) and expression targets (bigWig tracks or per-gene values at TSS bins).

Everything is held as per-chromosome arrays binned at ``bin_size`` bp (bins 0-based, half-open,
the last bin clipped at the chromosome end): tracks ``(n_cell_types, n_channels, n_bins)``, targets
``(n_cell_types, n_targets, n_bins)``. :class:`EpiData` bundles them with the sequence.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..genome import normalize_chrom

_CODE = np.full(256, 4, dtype=np.uint8)  # A C G T -> 0..3, everything else (N, IUPAC) -> 4
for _i, _b in enumerate("ACGT"):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


def encode(seq: str | bytes) -> np.ndarray:
    """DNA string → uint8 codes (A0 C1 G2 T3, N/other 4)."""
    raw = seq.encode() if isinstance(seq, str) else seq
    return _CODE[np.frombuffer(raw, dtype=np.uint8)]


def one_hot(codes: np.ndarray) -> np.ndarray:
    """uint8 codes (L,) → float32 one-hot (L, 4); N (code 4) is all zeros."""
    eye = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])  # (5, 4)
    return eye[codes]


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of uint8 codes (A↔T, C↔G, N stays N)."""
    return np.array([3, 2, 1, 0, 4], dtype=np.uint8)[codes[::-1]]


class GenomeSequence:
    """Random access to an uncompressed FASTA (+ .fai, built if missing) through pyfaidx.

    ``codes(chrom, start, end)`` pads with N outside the chromosome, so windows may hang off the ends.
    With ``in_memory=True`` each chromosome is encoded once and cached (small genomes, training).
    """

    def __init__(self, fasta: str | Path, *, in_memory: bool = False):
        import pyfaidx

        self.path = Path(fasta)
        if not self.path.exists():
            raise FileNotFoundError(f"FASTA not found: {self.path}")
        if str(self.path).endswith(".gz"):
            raise ValueError(f"{self.path}: compressed FASTA is not supported; "
                             "decompress it (and index with samtools faidx)")
        try:
            self._fa = pyfaidx.Fasta(str(self.path), as_raw=True, sequence_always_upper=True, rebuild=False)
        except Exception as err:  # pyfaidx raises its own exception types for malformed files
            raise ValueError(f"{self.path}: cannot index FASTA: {err}") from err
        self._names = {normalize_chrom(k): k for k in self._fa.keys()}
        self.chrom_sizes = {c: len(self._fa[k]) for c, k in self._names.items()}
        self.in_memory = in_memory
        self._cache: dict[str, np.ndarray] = {}

    def _chrom_codes(self, chrom: str) -> np.ndarray:
        if chrom not in self._cache:
            self._cache[chrom] = encode(self._fa[self._names[chrom]][:])
        return self._cache[chrom]

    def codes(self, chrom: str, start: int, end: int) -> np.ndarray:
        """uint8 codes of ``[start, end)`` (L = end - start), N-padded beyond the chromosome."""
        if chrom not in self.chrom_sizes:
            raise ValueError(f"{self.path}: chromosome {chrom!r} not in FASTA ({sorted(self.chrom_sizes)[:5]}...)")
        size = self.chrom_sizes[chrom]
        out = np.full(end - start, 4, dtype=np.uint8)
        lo, hi = max(start, 0), min(end, size)
        if hi > lo:
            if self.in_memory:
                out[lo - start : hi - start] = self._chrom_codes(chrom)[lo:hi]
            else:
                out[lo - start : hi - start] = encode(self._fa[self._names[chrom]][lo:hi])
        return out


def n_bins(size: int, bin_size: int) -> int:
    return -(-size // bin_size)


def bin_intervals(
    intervals: pd.DataFrame, chrom_sizes: dict[str, int], *, bin_size: int = 128
) -> dict[str, np.ndarray]:
    """Per-bp-valued intervals (chrom, start, end, value) → per-bin mean over bp (uncovered bp = 0).

    Returns ``{chrom: (n_bins,) float32}`` for every chromosome in ``chrom_sizes``.
    """
    out = {c: np.zeros(n_bins(s, bin_size), dtype=np.float64) for c, s in chrom_sizes.items()}
    for chrom, df in intervals.groupby("chrom", sort=False):
        if chrom not in out:
            continue
        size = chrom_sizes[chrom]
        edges = np.minimum(np.arange(len(out[chrom]) + 1, dtype=np.int64) * bin_size, size)  # (n_bins + 1,)
        start = np.minimum(df["start"].to_numpy(np.int64), size)
        end = np.minimum(df["end"].to_numpy(np.int64), size)
        val = df["value"].to_numpy(np.float64)
        # integral of the signal up to x: sum_i v_i * (min(x, e_i) - min(x, s_i)), at every bin edge
        integral = _sum_min(edges, end, val) - _sum_min(edges, start, val)
        out[chrom] = np.diff(integral) / np.diff(edges)
    return {c: v.astype(np.float32) for c, v in out.items()}


def _sum_min(x: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w_i * min(x, p_i)`` for every x, in O((n + m) log n)."""
    order = np.argsort(p)
    p, w = p[order], w[order]
    below = np.concatenate([[0.0], np.cumsum(w * p)])  # sum of w*p over p_i < x
    wsum = np.concatenate([[0.0], np.cumsum(w)])
    k = np.searchsorted(p, x, side="left")  # number of p_i < x
    return below[k] + x * (wsum[-1] - wsum[k])


def read_bedgraph(path: str | Path) -> pd.DataFrame:
    """A bedGraph (``chrom start end value``; ``track``/``browser``/``#`` lines skipped) as a table."""
    path = Path(path)
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            f = line.split()
            try:
                chrom, start, end, value = f[0], int(f[1]), int(f[2]), float(f[3])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: expected 'chrom start end value', got {line.rstrip()!r}") from None
            if start < 0 or end <= start:
                raise ValueError(f"{path}:{lineno}: bad interval {start}-{end}")
            rows.append((normalize_chrom(chrom), start, end, value))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "value"])


def read_bigwig(path: str | Path) -> pd.DataFrame:
    """All intervals of a bigWig (needs pyBigWig) as a ``chrom start end value`` table."""
    try:
        import pyBigWig
    except ImportError as err:  # optional dependency: `pip install atacformer[tracks]`
        raise ImportError("reading bigWig needs pyBigWig (pip install 'atacformer[tracks]')") from err
    bw = pyBigWig.open(str(path))
    if bw is None or not bw.isBigWig():
        raise ValueError(f"{path}: not a bigWig file")
    rows = []
    for chrom in bw.chroms():
        for start, end, value in bw.intervals(chrom) or ():
            rows.append((normalize_chrom(chrom), start, end, value))
    bw.close()
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "value"])


def read_track(path: str | Path, chrom_sizes: dict[str, int], *, bin_size: int = 128) -> dict[str, np.ndarray]:
    """bigWig (``.bw``/``.bigwig``) or bedGraph → ``{chrom: (n_bins,) float32}`` per-bin means."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"track not found: {path}")
    is_bw = path.suffix.lower() in (".bw", ".bigwig")
    table = read_bigwig(path) if is_bw else read_bedgraph(path)
    return bin_intervals(table, chrom_sizes, bin_size=bin_size)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A track manifest TSV with columns ``cell_type``, ``channel``, ``path`` (relative to the manifest)."""
    path = Path(path)
    df = pd.read_csv(path, sep="\t", dtype=str)
    missing = {"cell_type", "channel", "path"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)} (need cell_type, channel, path)")
    df["path"] = [str(p) if Path(p).is_absolute() else str(path.parent / p) for p in df["path"]]
    return df


def stack_tracks(
    manifest: pd.DataFrame, chrom_sizes: dict[str, int], *, cell_types: list[str] | None = None, bin_size: int = 128
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Read every (cell type, channel) track of a manifest → ``{chrom: (C, E, n_bins)}``, cell types, channels."""
    cts = cell_types or list(dict.fromkeys(manifest["cell_type"]))
    channels = list(dict.fromkeys(manifest["channel"]))
    out = {c: np.zeros((len(cts), len(channels), n_bins(s, bin_size)), np.float32) for c, s in chrom_sizes.items()}
    for row in manifest.itertuples():
        if row.cell_type not in cts:
            continue
        track = read_track(row.path, chrom_sizes, bin_size=bin_size)
        for chrom, v in track.items():
            out[chrom][cts.index(row.cell_type), channels.index(row.channel)] = v
    return out, cts, channels


def read_expression(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-gene expression TSV: ``gene, chrom, tss`` then one column per cell type →
    (genes table, genes × cell types values)."""
    path = Path(path)
    df = pd.read_csv(path, sep="\t")
    missing = {"gene", "chrom", "tss"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: expression table lacks column(s) {sorted(missing)} "
                         "(need gene, chrom, tss, <cell types>)")
    values = df.drop(columns=[c for c in ("gene", "chrom", "tss", "strand") if c in df.columns]).set_index(df["gene"])
    bad = [c for c in values.columns if not np.issubdtype(values[c].dtype, np.number)]
    if bad or values.shape[1] == 0:
        raise ValueError(f"{path}: cell-type columns must be numeric (bad: {bad or 'none given'})")
    genes = df[["gene", "chrom", "tss"]].assign(chrom=lambda d: d.chrom.map(normalize_chrom))
    return genes, values


def gene_targets(
    genes: pd.DataFrame, values: pd.DataFrame, chrom_sizes: dict[str, int], cell_types: list[str], *,
    bin_size: int = 128
) -> dict[str, np.ndarray]:
    """Per-gene expression placed at the TSS bin → ``{chrom: (C, 1, n_bins)}`` (genes sharing a bin add
    up); every other bin is NaN (unobserved, ignored by the loss)."""
    out = {c: np.full((len(cell_types), 1, n_bins(s, bin_size)), np.nan, np.float32) for c, s in chrom_sizes.items()}
    missing = [c for c in cell_types if c not in values.columns]
    if missing:
        raise ValueError(f"expression table lacks cell type column(s) {missing}")
    for chrom, g in genes.groupby("chrom", sort=False):
        if chrom not in out:
            continue
        b = g["tss"].to_numpy(np.int64) // bin_size
        v = values.loc[g["gene"], cell_types].to_numpy(np.float32).T  # (C, n_genes)
        for ci in range(len(cell_types)):
            track = out[chrom][ci, 0]
            track[b] = 0.0
            np.add.at(track, b, v[ci])
    return out


@dataclass
class EpiData:
    """Sequence + epigenome tracks + targets for a set of cell types, all at ``bin_size`` bp."""

    genome: GenomeSequence
    tracks: dict[str, np.ndarray]  # chrom -> (C, E, n_bins) raw epigenome values
    cell_types: list[str]
    channels: list[str]
    targets: dict[str, np.ndarray] | None = None  # chrom -> (C, T, n_bins)
    target_names: list[str] = field(default_factory=lambda: ["expression"])
    bin_size: int = 128
    transform: str = "log1p"  # applied to epigenome inputs: "log1p" or "none"

    def __post_init__(self) -> None:
        for chrom, t in self.tracks.items():
            if t.shape[:2] != (len(self.cell_types), len(self.channels)):
                raise ValueError(f"tracks[{chrom}] has shape {t.shape}, "
                                 f"expected ({len(self.cell_types)}, {len(self.channels)}, n_bins)")

    @property
    def chroms(self) -> list[str]:
        return [c for c in self.genome.chrom_sizes if c in self.tracks]

    def window(self, chrom: str, start: int, seq_len: int, cell: int, *, shift: int = 0) -> dict[str, np.ndarray]:
        """One sample: codes (L,), epi (E, P), target (T, P) for bins ``start // bin_size ...``;
        ``start`` must be bin-aligned. ``shift`` moves only the DNA by a few bp (augmentation)."""
        if start % self.bin_size:
            raise ValueError(f"window start {start} is not a multiple of {self.bin_size}")
        p, b0 = seq_len // self.bin_size, start // self.bin_size
        epi = _slice_bins(self.tracks[chrom][cell], b0, p)  # (E, P)
        if self.transform == "log1p":
            epi = np.log1p(np.maximum(epi, 0))
        out = {"codes": self.genome.codes(chrom, start + shift, start + shift + seq_len), "epi": epi}
        if self.targets is not None:
            out["target"] = _slice_bins(self.targets[chrom][cell], b0, p, fill=np.nan)  # (T, P), NaN off-chromosome
        return out


def _slice_bins(arr: np.ndarray, b0: int, p: int, *, fill: float = 0.0) -> np.ndarray:
    """``arr[:, b0:b0+p]`` padded with ``fill`` beyond either end. arr: (K, n_bins) -> (K, p)."""
    out = np.full((arr.shape[0], p), fill, dtype=np.float32)
    lo, hi = max(b0, 0), min(b0 + p, arr.shape[1])
    if hi > lo:
        out[:, lo - b0 : hi - b0] = arr[:, lo:hi]
    return out


def from_simulation(sim, fasta: str | Path) -> EpiData:
    """EpiData for a :class:`~atacformer.epiattend.simulate.SimulatedGenome` whose FASTA was written to ``fasta``."""
    genome = GenomeSequence(fasta, in_memory=True)
    tracks = {c: a[:, None, :] for c, a in sim.atac.items()}  # (C, 1, n_bins)
    targets = gene_targets(sim.genes, sim.expression, genome.chrom_sizes, sim.cell_types, bin_size=sim.bin_size)
    return EpiData(genome, tracks, list(sim.cell_types), ["atac"], targets, bin_size=sim.bin_size)
