"""``atacformer.io.read``: detect the input type (fragments, BED/narrowPeak, region matrix) and read it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import anndata as ad

from ..genome import DEFAULT_BIN_SIZE, Genome
from .fragments import open_binary
from .ingest import ingest_fragments, read_fragments
from .regions import read_bed, read_region_matrix
from .write import write_h5ad

_BED_SUFFIXES = (".bed", ".narrowpeak", ".broadpeak", ".bed.gz", ".narrowpeak.gz", ".broadpeak.gz")


def detect_kind(path: str | os.PathLike) -> str:
    """``fragments``, ``bed`` or ``matrix`` from the path and, for text files, the first record."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith((".h5ad", ".h5")):
        return "matrix"
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if "fragments" in name:
        return "fragments"
    if name.endswith(_BED_SUFFIXES):
        return "bed"
    with open_binary(path) as fh:
        for raw in fh:
            if raw.strip() and not raw.startswith((b"#", b"track", b"browser")):
                fields = raw.rstrip(b"\r\n").split(b"\t")
                break
        else:
            raise ValueError(f"{path}: empty file, cannot tell what it is")
    if len(fields) == 5 and fields[4].isdigit() and not fields[3].isdigit():
        return "fragments"
    if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
        return "bed"
    raise ValueError(f"{path}: not a fragments, BED or region-matrix file (first record {raw[:120]!r})")


def _kinds(paths: list[Path]) -> str:
    kinds = {detect_kind(p) for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"inputs mix file types {sorted(kinds)}: ingest one type at a time")
    kind = kinds.pop()
    if kind == "matrix" and len(paths) > 1:
        raise ValueError("give one region matrix at a time")
    return kind


def read(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike], *, genome: str | Genome = "hg38",
         bin_size: int = DEFAULT_BIN_SIZE, **kwargs) -> ad.AnnData:
    """Read fragments files, BED/narrowPeak files or a region matrix into a cells × bins AnnData.

    ``kwargs`` go to :func:`read_fragments` (counting, min_fragments, labels, …), :func:`read_bed`
    (sample_table) or :func:`read_region_matrix`."""
    paths = _as_list(path_or_paths)
    kind = _kinds(paths)
    if kind == "fragments":
        return read_fragments(paths, genome=genome, bin_size=bin_size, **kwargs)
    if kind == "bed":
        return read_bed(paths, genome=genome, bin_size=bin_size, **kwargs)
    return read_region_matrix(paths[0], genome=genome, bin_size=bin_size, **kwargs)


def ingest(path_or_paths, out: str | os.PathLike, *, genome: str | Genome = "hg38",
           bin_size: int = DEFAULT_BIN_SIZE, **kwargs) -> Path:
    """:func:`read` straight to an h5ad (fragments are streamed in bounded memory). Written atomically."""
    paths = _as_list(path_or_paths)
    if _kinds(paths) == "fragments":
        return ingest_fragments(paths, out, genome=genome, bin_size=bin_size, **kwargs)
    return write_h5ad(read(paths, genome=genome, bin_size=bin_size, **kwargs), out)


def _as_list(path_or_paths) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    out = [Path(p) for p in path_or_paths]
    if not out:
        raise ValueError("no input given")
    return out
