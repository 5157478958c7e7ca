"""Plots (PNG, matplotlib Agg): UMAP, confusion matrix, training curves, QC distributions."""

from .plots import confusion, qc, read_curves, training_curves, umap

__all__ = ["confusion", "qc", "read_curves", "training_curves", "umap"]
