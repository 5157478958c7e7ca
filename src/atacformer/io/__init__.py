"""Readers and writers: fragment files, BED/narrowPeak files and region matrices → cells × bins AnnData."""

from .fragments import FragmentChunk, iter_fragments
from .ingest import ingest_fragments, read_fragments
from .read import detect_kind, ingest, read
from .regions import read_bed, read_region_matrix
from .write import read_h5ad, write_h5ad

__all__ = ["FragmentChunk", "iter_fragments", "read_fragments", "ingest_fragments", "read_bed",
           "read_region_matrix", "read", "ingest", "detect_kind", "write_h5ad", "read_h5ad"]
