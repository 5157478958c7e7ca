"""Preprocessing: per-cell QC metrics, summaries and filters on cells × bins AnnData."""

from .qc import QC_COLUMNS, count_metrics, filter_cells, qc_summary
from .region_classes import annotate_region_classes, region_classes

__all__ = ["QC_COLUMNS", "annotate_region_classes", "count_metrics", "filter_cells", "qc_summary", "region_classes"]
