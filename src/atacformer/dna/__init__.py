"""Per-bin DNA embedding tables: Nucleotide Transformer (offline, from a local model directory) or a
fast, deterministic k-mer fallback; loaded and aligned to a bin vocabulary by bin name.

>>> from atacformer.dna import DNAEmbeddingTable, build_table
>>> table = build_table("hg38", "hg38.fa", method="kmer", dim=256, out="hg38_kmer256")
>>> E = DNAEmbeddingTable.load("hg38_kmer256").aligned(vocab)   # (len(vocab), 256) float32
"""

from .build import NTOptions, build_table, make_embedder
from .fasta import GenomeFasta
from .formats import read_table, write_table
from .kmer import KmerEmbedder, kmer_embed, kmer_features
from .nt import NTEmbedder, nt_embed, nt_tokens
from .table import DNAEmbeddingTable

__all__ = [
    "DNAEmbeddingTable",
    "GenomeFasta",
    "KmerEmbedder",
    "NTEmbedder",
    "NTOptions",
    "build_table",
    "kmer_embed",
    "kmer_features",
    "make_embedder",
    "nt_embed",
    "nt_tokens",
    "read_table",
    "write_table",
]
