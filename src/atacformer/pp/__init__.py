"""Preprocessing: per-cell QC metrics, summaries and filters on cells × bins AnnData, region classes of
bins, and the array-level TF-IDF / LSI / spectral embeddings of a count matrix (the ``tl.lsi`` /
``tl.spectral`` algorithms)."""

from .embeddings import lsi_embedding, spectral_embedding, tfidf
from .qc import QC_COLUMNS, count_metrics, filter_cells, qc_summary
from .region_classes import annotate_region_classes, region_classes

__all__ = ["QC_COLUMNS", "annotate_region_classes", "count_metrics", "filter_cells", "lsi_embedding", "qc_summary",
           "region_classes", "spectral_embedding", "tfidf"]
