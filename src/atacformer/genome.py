"""Genomes and genome-wide fixed-size bins: the coordinate system every other module shares.

A :class:`Genome` is an ordered set of chromosomes (human: chr1–22, chrX; mouse: chr1–19, chrX) with
their sizes, plus optional gene annotation (for TSS-based QC) and blacklist. Built-in genomes (hg38,
hg19, mm10) are shipped inside the package (see ``atacformer/data/ATTRIBUTION.md``); any other genome
comes from a chrom-sizes file.

A :class:`BinIndex` cuts the genome into fixed bins (default 5,000 bp, 0-based half-open, the last bin
of a chromosome clipped at its end) with global ids in chromosome order, named ``chr1:0-5000``.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_BIN_SIZE = 5000
BYTES_PER_BIN = 300  # bin names, var table, QC masks and the h5ad's var: rough memory per bin while ingesting
BUILTIN_GENOMES = ("hg38", "hg19", "mm10")
_MITO = {"chrM", "chrMT", "M", "MT", "chrm", "mt"}


def data_path(*parts: str) -> Path:
    """Path of a file shipped in ``atacformer/data``."""
    return Path(str(resources.files("atacformer").joinpath("data", *parts)))


def normalize_chrom(name: str) -> str:
    """Canonical UCSC-style name: ``1`` → ``chr1``, ``MT``/``chrMT`` → ``chrM``, ``x`` → ``chrX``."""
    if name in _MITO:
        return "chrM"
    if name.startswith("chr"):
        core = name[3:]
    elif name.startswith("Chr") or name.startswith("CHR"):
        core = name[3:]
    else:
        core = name
    if core.upper() in ("X", "Y"):
        core = core.upper()
    return "chr" + core


def _main_chromosome(name: str) -> bool:
    """chr1..chrN and chrX: the chromosome set atacformer models (Y, M, alt and random contigs excluded)."""
    return re.fullmatch(r"chr(\d+|X)", name) is not None


def read_chrom_sizes(path: str | Path) -> dict[str, int]:
    """Read a two-column ``chrom<TAB>length`` file (extra columns ignored, ``#`` comments skipped)."""
    sizes: dict[str, int] = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected 'chrom<TAB>length', got {line.rstrip()!r}")
            sizes[parts[0]] = int(parts[1])
    if not sizes:
        raise ValueError(f"{path}: no chromosome sizes found")
    return sizes


def _open_text(path: Path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


@dataclass(frozen=True)
class Genome:
    """An ordered chromosome set with sizes, optional genes (TSS) and blacklist files."""

    name: str
    chrom_sizes: dict[str, int]
    genes_path: Path | None = None
    blacklist_path: Path | None = None
    mito_name: str = "chrM"
    extra_sizes: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_chrom_sizes(
        cls,
        chrom_sizes: str | Path | dict[str, int],
        *,
        name: str = "custom",
        genes: str | Path | None = None,
        blacklist: str | Path | None = None,
        chroms: list[str] | None = None,
    ) -> Genome:
        """A genome from a chrom-sizes file or dict. ``chroms`` picks the modelled chromosomes
        (default: numbered autosomes and chrX, in natural order)."""
        raw = chrom_sizes if isinstance(chrom_sizes, dict) else read_chrom_sizes(chrom_sizes)
        norm = {normalize_chrom(c): int(n) for c, n in raw.items()}
        if chroms is None:
            chroms = sorted((c for c in norm if _main_chromosome(c)), key=_natural_key)
        else:
            chroms = [normalize_chrom(c) for c in chroms]
            missing = [c for c in chroms if c not in norm]
            if missing:
                raise ValueError(f"chromosomes {missing} are not in the chrom sizes of genome {name!r}")
        if not chroms:
            raise ValueError(f"genome {name!r}: no chromosome named like chr1..chrN/chrX in its chrom sizes")
        return cls(
            name=name,
            chrom_sizes={c: norm[c] for c in chroms},
            genes_path=Path(genes) if genes else None,
            blacklist_path=Path(blacklist) if blacklist else None,
            extra_sizes={c: n for c, n in norm.items() if c not in chroms},
        )

    @property
    def chroms(self) -> list[str]:
        return list(self.chrom_sizes)

    @property
    def n_chroms(self) -> int:
        return len(self.chrom_sizes)

    def chrom_index(self, name: str) -> int | None:
        """Index of a (possibly un-normalised) chromosome name in :attr:`chroms`, or None."""
        return self._index.get(normalize_chrom(name))

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chrom_sizes)}

    def is_mito(self, name: str) -> bool:
        return normalize_chrom(name) == self.mito_name

    def bins(self, bin_size: int = DEFAULT_BIN_SIZE) -> BinIndex:
        return BinIndex(self, bin_size)

    def genes(self) -> pd.DataFrame:
        """Gene annotation restricted to :attr:`chroms`: chrom, start, end, gene, strand, tss (0-based).

        Accepts BED-like files (chrom, start, end, name[, score], strand) and GTF/GFF (gene records)."""
        if self.genes_path is None:
            raise ValueError(f"genome {self.name!r} has no gene annotation; pass genes=... (BED or GTF)")
        return _read_genes(self.genes_path, self)

    def blacklist(self) -> pd.DataFrame:
        """Blacklisted regions (chrom, start, end) on :attr:`chroms`; empty if the genome has none."""
        if self.blacklist_path is None:
            return pd.DataFrame({"chrom": [], "start": [], "end": []}).astype({"start": int, "end": int})
        rows = []
        with _open_text(self.blacklist_path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                p = line.split("\t") if "\t" in line else line.split()
                try:
                    rows.append((normalize_chrom(p[0]), int(p[1]), int(p[2])))
                except (IndexError, ValueError):
                    raise ValueError(f"{self.blacklist_path}:{lineno}: not a BED line: {line.rstrip()!r}") from None
        df = pd.DataFrame(rows, columns=["chrom", "start", "end"])
        return df[df["chrom"].isin(self.chrom_sizes)].reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"name": self.name, "chrom_sizes": dict(self.chrom_sizes)}

    def same_coordinates(self, other: Genome) -> bool:
        return self.chrom_sizes == other.chrom_sizes


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _natural_key(chrom: str):
    core = chrom[3:]
    return (0, int(core), "") if core.isdigit() else (1, 0, core)


def _read_genes(path: Path, genome: Genome) -> pd.DataFrame:
    name = str(path)
    is_gtf = name.endswith((".gtf", ".gtf.gz", ".gff", ".gff.gz", ".gff3", ".gff3.gz"))
    df = _read_gtf(path) if is_gtf else _read_gene_bed(path)
    df["chrom"] = [normalize_chrom(c) for c in df["chrom"]]
    df = df[df["chrom"].isin(genome.chrom_sizes)].reset_index(drop=True)
    df["tss"] = np.where(df["strand"].to_numpy() == "-", df["end"].to_numpy() - 1, df["start"].to_numpy())
    return df


def _read_gene_bed(path: Path) -> pd.DataFrame:
    """chrom, start, end[, name[, score], strand] (the shipped tables have no score column)."""
    raw = pd.read_csv(path, sep="\t", header=None, comment="#", dtype=str, keep_default_na=False)
    raw = raw[~raw[0].str.startswith(("track", "browser"))]
    try:
        start, end = raw[1].astype(np.int64), raw[2].astype(np.int64)
    except (KeyError, ValueError):
        for lineno, (s, e) in enumerate(zip(raw.get(1, []), raw.get(2, []), strict=False), 1):
            if not (s.isdigit() and e.isdigit()):
                raise ValueError(f"{path}:{lineno}: not a gene BED line (start/end {s!r}, {e!r})") from None
        raise ValueError(f"{path}: not a gene BED file (needs chrom, start, end columns)") from None
    gene = raw[3] if raw.shape[1] > 3 else pd.Series(".", index=raw.index)
    strand = pd.Series(".", index=raw.index)
    for col in (5, 4):  # BED6 strand is column 6; the shipped 5-column tables have it in column 5
        if raw.shape[1] > col:
            strand = strand.where(~raw[col].isin(["+", "-"]), raw[col])
    return pd.DataFrame({"chrom": raw[0].to_numpy(), "start": start.to_numpy(), "end": end.to_numpy(),
                         "gene": gene.to_numpy(), "strand": strand.to_numpy()})


def _read_gtf(path: Path) -> pd.DataFrame:
    rows = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith("#"):
                continue
            p = line.rstrip("\n").split("\t")
            try:
                if p[2] != "gene":
                    continue
                m = re.search(r'gene_name "([^"]+)"', p[8]) or re.search(r"gene_name=([^;]+)", p[8]) \
                    or re.search(r'gene_id "([^"]+)"', p[8]) or re.search(r"ID=([^;]+)", p[8])
                rows.append((p[0], int(p[3]) - 1, int(p[4]), m.group(1) if m else ".", p[6]))
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: not a GTF/GFF line: {line.rstrip()!r}") from None
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "gene", "strand"])


def get_genome(name: str | Genome, *, bin_size: int | None = None) -> Genome:
    """A built-in genome by name (``hg38``, ``hg19``, ``mm10``), a chrom-sizes file path, or a Genome."""
    del bin_size  # accepted for call-site symmetry; bins are made by Genome.bins
    if isinstance(name, Genome):
        return name
    key = str(name).lower()
    aliases = {"grch38": "hg38", "grch37": "hg19", "grcm38": "mm10"}
    key = aliases.get(key, key)
    if key in BUILTIN_GENOMES:
        return _builtin(key)
    if Path(name).exists():
        return Genome.from_chrom_sizes(name, name=Path(name).name.split(".")[0])
    raise ValueError(
        f"unknown genome {name!r}: use one of {', '.join(BUILTIN_GENOMES)} or a chrom-sizes file path"
    )


_BUILTIN_CACHE: dict[str, Genome] = {}


def _builtin(key: str) -> Genome:
    if key not in _BUILTIN_CACHE:
        ref = data_path("reference")
        _BUILTIN_CACHE[key] = Genome.from_chrom_sizes(
            ref / "chrom_sizes" / f"{key}.chrom.sizes",
            name=key,
            genes=ref / "genes" / f"{key}_genes.bed.gz",
            blacklist=ref / "blacklist_v1" / f"{key}_blacklist.v1.bed.gz",
        )
    return _BUILTIN_CACHE[key]


class BinIndex:
    """Fixed-size genome-wide bins with global ids in chromosome order.

    Bin ``i`` of chromosome ``c`` covers ``[i*bin_size, min((i+1)*bin_size, len(c)))`` and has global id
    ``offsets[c] + i``.
    """

    def __init__(self, genome: Genome, bin_size: int = DEFAULT_BIN_SIZE):
        if int(bin_size) <= 0:
            raise ValueError(f"bin_size must be a positive integer, got {bin_size}")
        self.genome = genome
        self.bin_size = int(bin_size)
        sizes = np.array(list(genome.chrom_sizes.values()), dtype=np.int64)
        self.chrom_sizes = sizes
        self.n_bins_per_chrom = (sizes + self.bin_size - 1) // self.bin_size
        self.offsets = np.concatenate([[0], np.cumsum(self.n_bins_per_chrom)]).astype(np.int64)

    def __repr__(self) -> str:
        return f"BinIndex(genome={self.genome.name!r}, bin_size={self.bin_size}, n_bins={self.n_bins})"

    def check_memory(self, available: int | None = None) -> None:
        """Refuse (``ValueError``) a bin size so small that the bin table alone (about
        :data:`BYTES_PER_BIN` per bin) needs more than half the available memory."""
        available = _available_memory() if available is None else available
        need = self.n_bins * BYTES_PER_BIN
        if available and need > available // 2:
            smallest = -(-int(self.chrom_sizes.sum()) * BYTES_PER_BIN // (available // 2))
            raise ValueError(
                f"--bin-size {self.bin_size} gives {self.n_bins:,} bins on genome {self.genome.name!r}: the bin "
                f"table alone needs about {need / 1e9:.1f} GB, more than half the {available / 1e9:.1f} GB of "
                f"memory available; use --bin-size {smallest} or more (the model is built for 5000)")

    def __len__(self) -> int:
        return self.n_bins

    @property
    def n_bins(self) -> int:
        return int(self.offsets[-1])

    @property
    def chroms(self) -> list[str]:
        return self.genome.chroms

    def bin_ids(self, chrom_idx: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Global bin id of 0-based positions ``pos`` on chromosomes ``chrom_idx`` (indices into chroms).
        Positions past a chromosome's end are clipped into its last bin."""
        chrom_idx = np.asarray(chrom_idx, dtype=np.int64)
        local = np.asarray(pos, dtype=np.int64) // self.bin_size
        local = np.minimum(local, self.n_bins_per_chrom[chrom_idx] - 1)
        return self.offsets[chrom_idx] + local

    def chrom_of(self, bin_ids: np.ndarray) -> np.ndarray:
        """Chromosome index of each global bin id."""
        return np.searchsorted(self.offsets, np.asarray(bin_ids), side="right") - 1

    def coords(self, bin_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chrom index, start, end) of bins (all bins by default)."""
        ids = np.arange(self.n_bins) if bin_ids is None else np.asarray(bin_ids, dtype=np.int64)
        c = self.chrom_of(ids)
        start = (ids - self.offsets[c]) * self.bin_size
        end = np.minimum(start + self.bin_size, self.chrom_sizes[c])
        return c, start, end

    def names(self, bin_ids: np.ndarray | None = None) -> np.ndarray:
        """Bin names ``chr1:0-5000`` (all bins by default; computed once per index)."""
        if bin_ids is not None:
            return self._all_names[np.asarray(bin_ids, dtype=np.int64)]
        return self._all_names

    @cached_property
    def _all_names(self) -> np.ndarray:
        bs, out = self.bin_size, []
        for chrom, size in zip(self.chroms, self.chrom_sizes.tolist(), strict=False):
            starts = range(0, size, bs)
            out.extend([f"{chrom}:{s}-{s + bs}" for s in starts])
            out[-1] = f"{chrom}:{starts[-1]}-{size}"  # last bin clipped at the chromosome end
        return np.array(out, dtype=object)

    def ids_from_names(self, names) -> np.ndarray:
        """Global ids of bin names; -1 for names that are not bins of this index."""
        arr = np.asarray(names, dtype=object)
        if len(arr) == self.n_bins and np.array_equal(arr, self._all_names):
            return np.arange(self.n_bins, dtype=np.int64)  # this index's own names, in order (the common case)
        out = np.full(len(names), -1, dtype=np.int64)
        for i, name in enumerate(names):
            m = re.fullmatch(r"(.+)[:_-](\d+)[_-](\d+)", str(name))
            if not m:
                continue
            ci = self.genome.chrom_index(m.group(1))
            s, e = int(m.group(2)), int(m.group(3))
            if ci is None or s % self.bin_size or s >= self.chrom_sizes[ci]:
                continue
            b = self.offsets[ci] + s // self.bin_size
            if e == min(s + self.bin_size, self.chrom_sizes[ci]):
                out[i] = b
        return out

    def blacklist_mask(self) -> np.ndarray:
        """Boolean mask over bins overlapping any blacklisted region."""
        mask = np.zeros(self.n_bins, dtype=bool)
        bl = self.genome.blacklist()
        for chrom, s, e in zip(bl["chrom"], bl["start"].to_numpy(), bl["end"].to_numpy(), strict=False):
            ci = self.genome.chrom_index(chrom)
            first = self.offsets[ci] + s // self.bin_size
            last = self.offsets[ci] + min((e - 1) // self.bin_size, self.n_bins_per_chrom[ci] - 1)
            mask[first : last + 1] = True
        return mask

    def var(self) -> pd.DataFrame:
        """``var`` table for a cells × bins AnnData: chrom, start, end, blacklist; index = bin names."""
        c, start, end = self.coords()
        df = pd.DataFrame(
            {
                "chrom": pd.Categorical.from_codes(c, categories=self.chroms),
                "start": start,
                "end": end,
                "blacklist": self.blacklist_mask(),
            },
            index=pd.Index(self.names(), name="bin"),
        )
        return df

    def uns(self) -> dict:
        """What a cells × bins AnnData records in ``uns`` to be re-opened against the same bins."""
        return {
            "genome": self.genome.name,
            "bin_size": self.bin_size,
            "chroms": list(self.genome.chroms),  # explicit order: h5ad stores dict keys sorted as text
            "chrom_sizes": dict(self.genome.chrom_sizes),
        }

    @classmethod
    def from_uns(cls, uns) -> BinIndex:
        """Rebuild the bins an AnnData was made with (from ``uns['genome']``, ``uns['bin_size']``)."""
        if "genome" not in uns or "bin_size" not in uns:
            raise ValueError("AnnData has no uns['genome'] / uns['bin_size']: was it made by atacformer ingest?")
        name = str(uns["genome"])
        sizes = uns.get("chrom_sizes")
        if sizes is not None:
            sizes = {str(k): int(v) for k, v in dict(sizes).items()}
            order = ([str(c) for c in uns["chroms"]] if uns.get("chroms") is not None
                     else sorted(sizes, key=_natural_key))
            sizes = {c: sizes[c] for c in order}
        if name.lower() in BUILTIN_GENOMES and (sizes is None or sizes == get_genome(name).chrom_sizes):
            genome = get_genome(name)
        elif sizes is not None:
            genome = Genome.from_chrom_sizes(sizes, name=name, chroms=list(sizes))
        else:
            raise ValueError(f"AnnData genome {name!r} is not built in and uns has no 'chrom_sizes'")
        return cls(genome, int(uns["bin_size"]))

    def check_compatible(self, genome: str, bin_size: int, *, what: str = "data") -> None:
        """Raise a clear error if ``genome``/``bin_size`` differ from this index's."""
        if str(genome) != self.genome.name or int(bin_size) != self.bin_size:
            raise ValueError(
                f"{what} is on genome {genome!r} with {bin_size} bp bins, but this is "
                f"{self.genome.name!r} with {self.bin_size} bp bins"
            )
