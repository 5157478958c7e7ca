"""Plots (matplotlib, scanpy's ``ax=`` / ``show=`` / ``save=``): UMAP, confusion matrix, training curves,
QC distributions; and the HTML report page."""

from .plots import LABELS, confusion, label, qc, read_curves, training_curves, umap
from .report import Report, table_html

__all__ = ["LABELS", "Report", "confusion", "label", "qc", "read_curves", "table_html", "training_curves", "umap"]
