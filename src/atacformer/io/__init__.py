"""Readers and writers: fragment files, BED/narrowPeak files and region matrices → cells × bins AnnData."""

from .fragments import FragmentChunk, iter_fragments

__all__ = ["FragmentChunk", "iter_fragments"]
