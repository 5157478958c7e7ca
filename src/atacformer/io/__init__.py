"""Readers and writers: fragment files, BED/narrowPeak files and region matrices → cells × bins AnnData."""

from .fragments import FragmentChunk, iter_fragments
from .ingest import ingest_fragments, read_fragments
from .read import detect_kind, ingest, read
from .regions import read_bed, read_region_matrix
from .write import read_h5ad, write_h5ad

__all__ = [
           "FragmentChunk",
           "detect_kind",
           "ingest",
           "ingest_fragments",
           "iter_fragments",
           "read",
           "read_bed",
           "read_fragments",
           "read_h5ad",
           "read_region_matrix",
           "write_h5ad",
]
