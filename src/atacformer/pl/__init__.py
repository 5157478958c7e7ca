"""Plots (PNG, matplotlib Agg): UMAP, confusion matrix, training curves, QC distributions."""

from .plots import confusion, qc, read_curves, training_curves, umap
from .report import Report, table_html

__all__ = ["Report", "confusion", "qc", "read_curves", "table_html", "training_curves", "umap"]
