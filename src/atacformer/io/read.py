"""``atacformer.io.read``: detect the input type (fragments, BED/narrowPeak, region matrix) and read it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import anndata as ad

from ..genome import DEFAULT_BIN_SIZE, Genome
from .detect import detect_kind, input_kind, spooled
from .ingest import ingest_fragments, read_fragments
from .regions import read_bed, read_region_matrix
from .write import write_h5ad

__all__ = ["detect_kind", "ingest", "read"]


def read(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike], *, genome: str | Genome = "hg38",
         bin_size: int = DEFAULT_BIN_SIZE, input_type: str | None = None, **kwargs) -> ad.AnnData:
    """Read fragments files, BED/narrowPeak files or a region matrix into a cells × bins AnnData.

    The type is detected from the content (:func:`atacformer.io.detect_kind`) unless ``input_type``
    (``fragments``, ``bed``, ``matrix``) forces it. Piped inputs are copied to a temporary file first.
    ``kwargs`` go to :func:`read_fragments` (counting, min_fragments, labels, …), :func:`read_bed`
    (sample_table) or :func:`read_region_matrix`."""
    with spooled(_as_list(path_or_paths)) as paths:
        return _read(paths, input_kind(paths, input_type), genome=genome, bin_size=bin_size, **kwargs)


def _read(paths: list[Path], kind: str, **kwargs) -> ad.AnnData:
    genome, bin_size = kwargs.pop("genome"), kwargs.pop("bin_size")
    if kind == "fragments":
        return read_fragments(paths, genome=genome, bin_size=bin_size, **kwargs)
    if kind == "bed":
        return read_bed(paths, genome=genome, bin_size=bin_size, **kwargs)
    return read_region_matrix(paths[0], genome=genome, bin_size=bin_size, **kwargs)


def ingest(path_or_paths, out: str | os.PathLike, *, genome: str | Genome = "hg38",
           bin_size: int = DEFAULT_BIN_SIZE, input_type: str | None = None, **kwargs) -> Path:
    """:func:`read` straight to an h5ad (fragments are streamed in bounded memory). Written atomically."""
    with spooled(_as_list(path_or_paths)) as paths:
        kind = input_kind(paths, input_type)
        if kind == "fragments":
            return ingest_fragments(paths, out, genome=genome, bin_size=bin_size, **kwargs)
        return write_h5ad(_read(paths, kind, genome=genome, bin_size=bin_size, **kwargs), out)


def _as_list(path_or_paths) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        return [Path(path_or_paths)]
    out = [Path(p) for p in path_or_paths]
    if not out:
        raise ValueError("no input given")
    return out
