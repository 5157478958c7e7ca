"""Evaluation metrics and baseline embeddings.

Label agreement (ARI, NMI, accuracy, macro-F1, kNN transfer), scIB batch metrics (iLISI, kBET,
batch ASW, cell-type ASW, graph connectivity), and the LSI / spectral baselines computed on the same
bins as the model.
"""

from .alignment import foscttm, pearson_per_cell, pearson_per_gene, retrieval
from .baselines import lsi, spectral, tfidf
from .batch import (
    batch_asw,
    celltype_asw,
    graph_connectivity,
    ilisi,
    kbet,
    knn_graph,
    lisi,
)
from .evaluate import evaluate, evaluate_embedding, to_markdown, write_results
from .labels import accuracy, ari, knn_accuracy, knn_predict, macro_f1, nmi

__all__ = [
    "accuracy",
    "ari",
    "batch_asw",
    "celltype_asw",
    "evaluate",
    "evaluate_embedding",
    "foscttm",
    "graph_connectivity",
    "ilisi",
    "kbet",
    "knn_accuracy",
    "knn_graph",
    "knn_predict",
    "lisi",
    "lsi",
    "macro_f1",
    "nmi",
    "pearson_per_cell",
    "pearson_per_gene",
    "retrieval",
    "spectral",
    "tfidf",
    "to_markdown",
    "write_results",
]
