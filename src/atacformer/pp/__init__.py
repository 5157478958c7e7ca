"""Preprocessing: per-cell QC metrics, summaries and filters on cells × bins AnnData."""

from .qc import QC_COLUMNS, count_metrics, filter_cells, qc_summary

__all__ = ["QC_COLUMNS", "count_metrics", "filter_cells", "qc_summary"]
