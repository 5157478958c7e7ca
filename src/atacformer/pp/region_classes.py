"""Region classes of genome bins: promoter, TTS, CDS exon, UTRs, ncRNA exon, intron, intergenic.

Two steps, both documented in README "Region classes":

1. **Bases.** Every base of the genome gets one class, HOMER's priority order (``annotatePeaks.pl``)
   with its windows: ``promoter`` (TSS −1 kb…+100 bp) > ``TTS`` (−100 bp…+1 kb) > ``CDS`` exon >
   ``5UTR`` > ``3UTR`` > ``ncRNA`` (any other exon: non-coding genes and non-coding isoforms) > ``intron``
   > ``intergenic``. The built-in hg19 annotation (ArchR's) has no CDS/UTR split: its exons are ``exon``.
2. **Bins.** A bin takes the highest-priority class whose bases cover at least ``min_fraction`` of the
   bin (default 0.1, i.e. 500 bp of a 5 kb bin); if no class does, the class covering most of it
   (the background — ``intergenic``, or ``other`` for user classes — included; ties → higher priority).
   ``min_fraction=0`` is "any overlap wins by priority", ``min_fraction=1`` is "the majority class".

User classes (``classes=``): a BED (4th column = class; overlapping intervals resolved per base by
priority: the built-in names in the order above, then the other names in order of first appearance,
or the order given by ``priority``), a HOMER ``annotatePeaks.pl`` output (1-based ``Start``; the
``Annotation`` column's class, HOMER names mapped to ours), or a bin → class TSV (bin names as in
``var_names``; unlisted bins get ``other``). The built-in annotations (``atacformer/data/annotation``)
are the base classes of step 1, stored as runs; see ``data/ATTRIBUTION.md``.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..genome import (
    BUILTIN_GENOMES,
    DEFAULT_BIN_SIZE,
    BinIndex,
    Genome,
    data_path,
    get_genome,
    normalize_chrom,
)

PRIORITY = ("promoter", "TTS", "CDS", "exon", "5UTR", "3UTR", "ncRNA", "intron")  # HOMER's order, highest first
BACKGROUND = "intergenic"  # built-in annotations: bases in no feature
USER_BACKGROUND = "other"  # user classes: bins no interval reaches
DEFAULT_MIN_FRACTION = 0.1
PROMOTER_WINDOW = (1000, 100)  # bp upstream, downstream of a TSS (HOMER's default)
TTS_WINDOW = (100, 1000)  # bp upstream, downstream of a transcript end
HOMER_NAMES = {"promoter-TSS": "promoter", "TTS": "TTS", "exon": "CDS", "5' UTR": "5UTR", "3' UTR": "3UTR",
               "non-coding": "ncRNA", "intron": "intron", "Intergenic": BACKGROUND}
ANNOTATION_DIR = ("annotation",)

PathLike = str | Path
Classes = PathLike | pd.Series | None


# ------------------------------------------------------------------ step 1: base classes
def flatten(start: np.ndarray, end: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint runs ``(start, end, code)`` in which every base has the lowest ``code`` of the intervals
    covering it (lower code = higher priority); bases no interval covers are left out.

    Coordinates are one axis (global positions: callers offset each chromosome); intervals (N,) are
    half-open, empty ones ignored. Adjacent runs of the same code are merged."""
    start, end, code = (np.asarray(a, dtype=np.int64) for a in (start, end, code))
    ok = end > start
    start, end, code = start[ok], end[ok], code[ok]
    if not len(start):
        return (np.zeros(0, np.int64),) * 3
    cuts = np.unique(np.concatenate([start, end]))  # (P,) elementary segments [cuts[i], cuts[i+1])
    best = np.full(len(cuts) - 1, -1, dtype=np.int64)  # (P-1,) code of each segment, -1 = none
    for c in np.unique(code):  # ascending = priority order
        sel = code == c
        depth = np.zeros(len(cuts), dtype=np.int64)
        np.add.at(depth, np.searchsorted(cuts, start[sel]), 1)
        np.add.at(depth, np.searchsorted(cuts, end[sel]), -1)
        covered = np.cumsum(depth)[:-1] > 0  # (P-1,)
        best[(best < 0) & covered] = c
    keep = np.flatnonzero(best >= 0)
    new_run = np.ones(len(keep), dtype=bool)
    new_run[1:] = (np.diff(keep) > 1) | (np.diff(best[keep]) != 0)
    first = keep[new_run]
    last = keep[np.append(np.flatnonzero(new_run)[1:] - 1, len(keep) - 1)]
    return cuts[first], cuts[last + 1], best[first]


def _chrom_offsets(genome: Genome) -> dict[str, int]:
    """Start of each chromosome on one axis, one base apart (so no run can merge across chromosomes)."""
    sizes = np.array(list(genome.chrom_sizes.values()), dtype=np.int64) + 1
    return dict(zip(genome.chroms, np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist(), strict=False))


def flatten_intervals(intervals: pd.DataFrame, genome: Genome, classes: Sequence[str]) -> pd.DataFrame:
    """Base classes of ``intervals`` (chrom, start, end, class; classes in priority order ``classes``)
    as disjoint runs (chrom, start, end, class) on the chromosomes of ``genome``, clipped to their sizes."""
    chrom = np.array([normalize_chrom(str(c)) for c in intervals["chrom"]], dtype=object)
    offsets = _chrom_offsets(genome)
    on = np.array([c in offsets for c in chrom], dtype=bool)
    chrom = chrom[on]
    size = np.array([genome.chrom_sizes[c] for c in chrom], dtype=np.int64)
    base = np.array([offsets[c] for c in chrom], dtype=np.int64)
    start = np.clip(intervals["start"].to_numpy(np.int64)[on], 0, size) + base
    end = np.clip(intervals["end"].to_numpy(np.int64)[on], 0, size) + base
    code = pd.Categorical(intervals["class"].to_numpy()[on], categories=list(classes)).codes.astype(np.int64)
    if (code < 0).any():
        bad = sorted(set(intervals["class"].to_numpy()[on][code < 0]))
        raise ValueError(f"classes {bad} are not in the class order {list(classes)}")
    s, e, c = flatten(start, end, code)
    starts = np.array(list(offsets.values()), dtype=np.int64)
    ci = np.searchsorted(starts, s, side="right") - 1
    return pd.DataFrame({"chrom": np.array(genome.chroms, dtype=object)[ci], "start": s - starts[ci],
                         "end": e - starts[ci], "class": np.array(classes, dtype=object)[c]})


def _window(anchor: np.ndarray, minus: np.ndarray, up: int, down: int) -> tuple[np.ndarray, np.ndarray]:
    """[anchor − up, anchor + down) on + strands, mirrored on − strands (anchor = a boundary coordinate)."""
    return np.where(minus, anchor - down, anchor - up), np.where(minus, anchor + up, anchor + down)


def gene_intervals(genes: pd.DataFrame, features: dict[str, pd.DataFrame],
                   tss: pd.DataFrame | None = None) -> pd.DataFrame:
    """Feature intervals (chrom, start, end, class) of a gene annotation, for :func:`flatten_intervals`.

    ``genes`` (chrom, start, end, strand): promoter windows at the TSSs (the genes' 5' ends, or the rows
    of ``tss`` — chrom, start, strand — when given), TTS windows at their 3' ends, ``intron`` over the
    whole gene body (exonic bases are taken by the exon classes, which rank higher). ``features``:
    class name → table (chrom, start, end) of exon-level features (``CDS``, ``5UTR``, ``3UTR``, ``ncRNA``
    for all exons, or ``exon``)."""
    minus = genes["strand"].to_numpy() == "-"
    gs, ge = genes["start"].to_numpy(np.int64), genes["end"].to_numpy(np.int64)
    t = genes if tss is None else tss
    t_minus = t["strand"].to_numpy() == "-"
    t_anchor = (np.where(t_minus, genes["end"], genes["start"]) if tss is None
                else np.where(t_minus, tss["start"].to_numpy(np.int64) + 1, tss["start"].to_numpy(np.int64)))
    parts = [(t["chrom"].to_numpy(), *_window(t_anchor.astype(np.int64), t_minus, *PROMOTER_WINDOW), "promoter"),
             (genes["chrom"].to_numpy(), *_window(np.where(minus, gs, ge), minus, *TTS_WINDOW), "TTS")]
    parts += [(f["chrom"].to_numpy(), f["start"].to_numpy(np.int64), f["end"].to_numpy(np.int64), name)
              for name, f in features.items()]
    parts.append((genes["chrom"].to_numpy(), gs, ge, "intron"))
    return pd.concat([pd.DataFrame({"chrom": c, "start": s, "end": e, "class": name}) for c, s, e, name in parts],
                     ignore_index=True)


# ------------------------------------------------------------------ step 2: bins
def bin_coverage(runs: pd.DataFrame, bins: BinIndex, classes: Sequence[str]) -> np.ndarray:
    """(n_bins, n_classes) bases of each bin covered by each class of the disjoint ``runs``."""
    ci = np.array([bins.genome.chrom_index(c) for c in runs["chrom"]], dtype=np.int64)
    start, end = runs["start"].to_numpy(np.int64), runs["end"].to_numpy(np.int64)
    code = pd.Categorical(runs["class"], categories=list(classes)).codes.astype(np.int64)
    bs = bins.bin_size
    first, last = start // bs, (end - 1) // bs  # local bins of each run
    n = last - first + 1
    run = np.repeat(np.arange(len(start)), n)  # (pieces,) one piece per (run, bin) pair
    local = first[run] + (np.arange(len(run)) - np.repeat(np.cumsum(n) - n, n))
    length = np.minimum(end[run], (local + 1) * bs) - np.maximum(start[run], local * bs)
    key = (bins.offsets[ci[run]] + local) * len(classes) + code[run]
    cov = np.bincount(key, weights=length, minlength=bins.n_bins * len(classes))
    return cov.reshape(bins.n_bins, len(classes))


def assign(coverage: np.ndarray, bin_length: np.ndarray, min_fraction: float = DEFAULT_MIN_FRACTION) -> np.ndarray:
    """Class code of each bin from its coverage (n_bins, n_classes; classes in priority order) and length
    (n_bins,): the first class covering ≥ ``min_fraction`` of the bin, else the most-covering one with
    the uncovered rest as one more class (code ``n_classes``, the background)."""
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    frac = coverage / bin_length[:, None]  # (n_bins, n_classes)
    ok = (frac >= min_fraction) & (coverage > 0)
    rest = np.maximum(bin_length - coverage.sum(1), 0)  # (n_bins,) background bases
    most = np.argmax(np.concatenate([coverage, rest[:, None]], axis=1), axis=1)  # ties → higher priority
    return np.where(ok.any(1), np.argmax(ok, axis=1), most)


def classes_of_runs(runs: pd.DataFrame, bins: BinIndex, classes: Sequence[str], background: str,
                    min_fraction: float = DEFAULT_MIN_FRACTION) -> pd.Series:
    """One class per bin from base-class ``runs``: categorical Series indexed by bin names."""
    cov = bin_coverage(runs, bins, classes)
    _, start, end = bins.coords()
    code = assign(cov, (end - start).astype(np.float64), min_fraction)
    cats = [*classes, background]
    values = pd.Categorical.from_codes(code, categories=cats)
    return pd.Series(values, index=pd.Index(bins.names(), name="bin"), name="region_class")


# ------------------------------------------------------------------ built-in annotations
def builtin_classes(name: str) -> tuple[str, ...]:
    """Class order (priority, background last) of a built-in genome's annotation."""
    exons = ("exon",) if name == "hg19" else ("CDS", "5UTR", "3UTR", "ncRNA")
    return ("promoter", "TTS", *exons, "intron")


def write_runs(runs: pd.DataFrame, classes: Sequence[str], path: PathLike) -> None:
    """Write disjoint runs (chrom, start, end, class) delta-encoded: ``chrom gap length code`` lines."""
    from .._atomic import atomic_path

    gap = runs["start"].to_numpy(np.int64) - np.where(
        runs["chrom"].to_numpy() == np.roll(runs["chrom"].to_numpy(), 1), np.roll(runs["end"].to_numpy(np.int64), 1), 0)
    gap[:1] = runs["start"].to_numpy(np.int64)[:1]
    table = pd.DataFrame({"chrom": runs["chrom"], "gap": gap, "length": runs["end"] - runs["start"],
                          "code": pd.Categorical(runs["class"], categories=list(classes)).codes})
    with atomic_path(path, suffix=".gz") as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz, io.TextIOWrapper(gz) as fh:  # same bytes each build
        fh.write(f"#classes={','.join(classes)}\n")
        table.to_csv(fh, sep="\t", header=False, index=False)


def read_runs(path: PathLike) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Runs (chrom, start, end, class) and class order of a file written by :func:`write_runs`."""
    with gzip.open(path, "rt") as fh:
        head = fh.readline()
        if not head.startswith("#classes="):
            raise ValueError(f"{path}:1: not a region-class runs file (no '#classes=' header)")
        classes = tuple(head.strip().split("=", 1)[1].split(","))
        table = pd.read_csv(fh, sep="\t", header=None, names=["chrom", "gap", "length", "code"],
                            dtype={"chrom": str, "gap": np.int64, "length": np.int64, "code": np.int64})
    new_chrom = table["chrom"].to_numpy() != np.roll(table["chrom"].to_numpy(), 1)
    step = table["gap"].to_numpy() + table["length"].to_numpy()
    group = np.cumsum(new_chrom) - 1
    csum = np.cumsum(step)
    base = np.concatenate([[0], csum])[np.flatnonzero(new_chrom)][group]  # cumulative steps before each chromosome
    end = csum - base
    runs = pd.DataFrame({"chrom": table["chrom"].to_numpy(), "start": end - table["length"].to_numpy(), "end": end,
                         "class": np.array(classes, dtype=object)[table["code"].to_numpy()]})
    return runs, classes


def builtin_annotation(genome: Genome) -> tuple[pd.DataFrame, tuple[str, ...]] | None:
    """Shipped base-class runs of a built-in genome (None for other genomes or changed chromosome sizes)."""
    name = genome.name.lower()
    if name not in BUILTIN_GENOMES:
        return None
    ref = get_genome(name).chrom_sizes
    if any(ref.get(c) != n for c, n in genome.chrom_sizes.items()):
        return None
    runs, classes = _read_builtin(name)
    if len(genome.chrom_sizes) < len(ref):  # a subset of the chromosomes: only their runs
        runs = runs[runs["chrom"].isin(list(genome.chrom_sizes))].reset_index(drop=True)
    return runs, classes


@lru_cache(maxsize=3)
def _read_builtin(name: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    return read_runs(data_path(*ANNOTATION_DIR, f"{name}_classes.tsv.gz"))


# ------------------------------------------------------------------ user classes
def _order(names: Sequence[str], priority: Sequence[str] | None) -> list[str]:
    """Priority order of user class names: ``priority`` (must list them all), else the built-in names in
    HOMER's order, then the others in order of first appearance."""
    seen = list(dict.fromkeys(str(n) for n in names))
    if priority is not None:
        missing = [n for n in seen if n not in priority]
        if missing:
            raise ValueError(f"classes {missing[:5]} are not in priority={list(priority)}")
        return [str(p) for p in priority]
    known = [p for p in (*PRIORITY, BACKGROUND) if p in seen]
    return known + [n for n in seen if n not in known]


def _lines(path: Path) -> list[list[str]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        return [line.rstrip("\n\r").split("\t") for line in fh]


def _is_bin_name(text: str) -> bool:
    chrom, sep, span = text.rpartition(":")
    start, dash, end = span.partition("-")
    return bool(chrom and sep and dash and start.isdigit() and end.isdigit())


def read_class_file(path: PathLike) -> pd.DataFrame:
    """Intervals (chrom, start, end, class) of a BED (4th column = class), a HOMER ``annotatePeaks.pl``
    output or a bin → class TSV (bin names ``chr1:0-5000``; optional header line). 0-based half-open."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rows = [(i, r) for i, r in enumerate(_lines(path), 1)
            if r and r[0].strip() and not r[0].startswith(("#", "track", "browser"))]
    if not rows:
        raise ValueError(f"{path}: no class lines")
    head = rows[0][1]
    if "Annotation" in head and any(h.startswith("PeakID") for h in head[:1]):
        return _homer(path, rows)
    if not _is_bin_name(head[0]) and len(head) == 2:
        rows = rows[1:]  # a TSV header line (bin, class)
    if rows and _is_bin_name(rows[0][1][0]):
        out = _parse(path, rows, _tsv_row)
        out.attrs["bins"] = True  # intervals are bin names: checked against the bins by region_classes
        return out
    return _parse(path, rows, _bed_row)


def _tsv_row(r: list[str]) -> tuple:
    chrom, _, span = r[0].rpartition(":")
    start, _, end = span.partition("-")
    return chrom, int(start), int(end), r[1]


def _bed_row(r: list[str]) -> tuple:
    return r[0], int(r[1]), int(r[2]), r[3]


def _parse(path: Path, rows: list, parse) -> pd.DataFrame:
    out = []
    for lineno, r in rows:
        try:
            chrom, start, end, name = parse(r)
        except (IndexError, ValueError):
            want = "bin<TAB>class" if parse is _tsv_row else "chrom<TAB>start<TAB>end<TAB>class (BED4)"
            raise ValueError(f"{path}:{lineno}: expected {want}, got {chr(9).join(r)!r}") from None
        if end <= start or start < 0 or not name.strip():
            raise ValueError(f"{path}:{lineno}: empty interval or class: {chr(9).join(r)!r}")
        out.append((chrom, start, end, name.strip()))
    return pd.DataFrame(out, columns=["chrom", "start", "end", "class"])


def _homer(path: Path, rows: list) -> pd.DataFrame:
    head = rows[0][1]
    try:
        cols = [head.index(c) for c in ("Chr", "Start", "End", "Annotation")]
    except ValueError:
        raise ValueError(f"{path}:{rows[0][0]}: HOMER header lacks Chr/Start/End/Annotation") from None
    out = []
    for lineno, r in rows[1:]:
        try:
            chrom, start, end, ann = (r[i] for i in cols)
            start, end = int(start) - 1, int(end)  # HOMER: 1-based, closed
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{lineno}: not a HOMER annotatePeaks.pl line: {chr(9).join(r)[:80]!r}") from None
        if ann.strip() in ("", "NA"):
            continue
        name = ann.split(" (")[0].strip()
        out.append((chrom, start, end, HOMER_NAMES.get(name, name)))
    return pd.DataFrame(out, columns=["chrom", "start", "end", "class"])


# ------------------------------------------------------------------ public API
def _user_intervals(classes, bins: BinIndex) -> pd.DataFrame:
    if isinstance(classes, pd.Series):
        names = classes.index.astype(str)
        table = pd.DataFrame({"name": names, "class": classes.astype(str).to_numpy()})
        what = "classes Series"
    else:
        table = read_class_file(classes)
        if not table.attrs.get("bins"):
            return table
        names = [f"{c}:{s}-{e}" for c, s, e in zip(table["chrom"], table["start"], table["end"], strict=False)]
        what = str(classes)
    ids = bins.ids_from_names(list(names))
    if (ids < 0).any():
        bad = np.asarray(names, dtype=object)[ids < 0][0]
        raise ValueError(f"{what}: {bad!r} is not a {bins.bin_size} bp bin of genome {bins.genome.name!r} "
                         f"({int((ids < 0).sum())} such names)")
    c, start, end = bins.coords(ids)
    return pd.DataFrame({"chrom": np.array(bins.chroms, dtype=object)[c], "start": start, "end": end,
                         "class": table["class"].to_numpy()})


def region_classes(genome: str | Genome = "hg38", bin_size: int = DEFAULT_BIN_SIZE, classes: Classes = None, *,
                   min_fraction: float = DEFAULT_MIN_FRACTION, priority: Sequence[str] | None = None) -> pd.Series:
    """One region class per bin of a genome.

    Parameters
    ----------
    genome
        A built-in genome name (hg38, hg19, mm10), a chrom-sizes path or a :class:`~atacformer.genome.Genome`.
    bin_size
        Bin width in bp.
    classes
        None: the built-in gene annotation (built-in genomes only). Else a BED (4th column = class), a
        HOMER ``annotatePeaks.pl`` output, a bin → class TSV, or a Series bin name → class.
    min_fraction
        A bin takes the highest-priority class covering at least this fraction of it, else the class
        covering most of it (module docstring).
    priority
        User classes only: their priority order, highest first (default: HOMER's names first, then
        order of first appearance).

    Returns
    -------
    Categorical Series named ``region_class`` indexed by bin names; categories in priority order with
    the background (``intergenic``, or ``other`` for user classes) last.
    """
    genome = get_genome(genome)
    bins = genome.bins(bin_size)
    if classes is None:
        if priority is not None:
            raise ValueError("priority applies to user classes only (classes=FILE)")
        key = (genome.name, tuple(genome.chrom_sizes.items()), bins.bin_size, float(min_fraction))
        return _builtin_classes(*key).copy()
    intervals = _user_intervals(classes, bins)
    order = _order(intervals["class"], priority)
    runs = flatten_intervals(intervals, genome, order)
    return classes_of_runs(runs, bins, order, USER_BACKGROUND, min_fraction)


@lru_cache(maxsize=8)
def _builtin_classes(name: str, sizes: tuple, bin_size: int, min_fraction: float) -> pd.Series:
    genome = Genome.from_chrom_sizes(dict(sizes), name=name, chroms=[c for c, _ in sizes])
    found = builtin_annotation(genome)
    if found is None:
        raise ValueError(f"genome {genome.name!r} has no built-in gene annotation (built in: "
                         f"{', '.join(BUILTIN_GENOMES)}); pass classes=FILE (BED, HOMER output or bin TSV)")
    runs, order = found
    return classes_of_runs(runs, genome.bins(bin_size), order, BACKGROUND, min_fraction)


def annotate_region_classes(adata: ad.AnnData, *, classes: Classes = None, min_fraction: float = DEFAULT_MIN_FRACTION,
                            key_added: str = "region_class", copy: bool = False) -> ad.AnnData | None:
    """Region class of every bin of a cells × bins AnnData (made by ``atacformer ingest``).

    Parameters
    ----------
    adata
        Cells × bins AnnData with ``uns['genome']`` and ``uns['bin_size']``.
    classes, min_fraction
        As in :func:`region_classes`.
    key_added
        ``var`` column written.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or the new AnnData with ``copy=True``; sets ``var[key_added]`` (categorical; bins of
    ``var_names`` that are not bins of the genome raise an error).
    """
    bins = BinIndex.from_uns(adata.uns)
    table = region_classes(bins.genome, bins.bin_size, classes, min_fraction=min_fraction)
    ids = bins.ids_from_names(adata.var_names)
    if (ids < 0).any():
        raise ValueError(f"var_names such as {adata.var_names[ids < 0][0]!r} are not {bins.bin_size} bp bins of "
                         f"{bins.genome.name!r}")
    out = adata.copy() if copy else adata
    out.var[key_added] = pd.Categorical.from_codes(table.cat.codes.to_numpy()[ids], categories=table.cat.categories)
    return out if copy else None


def bin_var(bins: BinIndex) -> pd.DataFrame:
    """:meth:`BinIndex.var` plus ``region_class`` for genomes with a built-in annotation (the ingest hook)."""
    var = bins.var()
    if builtin_annotation(bins.genome) is not None:
        var["region_class"] = region_classes(bins.genome, bins.bin_size).to_numpy()
    return var
