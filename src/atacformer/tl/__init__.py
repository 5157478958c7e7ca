"""Tools: embed, cluster, UMAP, fine-tune, annotate, map, integrate, region embeddings (scanpy style)."""

from .cluster import cluster, umap

__all__ = ["cluster", "umap"]
