"""Evaluation metrics: pure functions of arrays (no AnnData is read or written here).

Label agreement (ARI, NMI, accuracy, macro-F1, kNN transfer), scIB batch metrics (iLISI, kBET, batch ASW,
cell-type ASW, graph connectivity), and :func:`score_embedding`, every score of one embedding. The
protocol on an AnnData (cluster each embedding to the label count, score it) is ``atacformer.tl.evaluate``;
the LSI / spectral baselines are ``atacformer.tl.lsi`` / ``tl.spectral`` (arrays: ``atacformer.pp``).
"""

from .alignment import foscttm, pearson_per_cell, pearson_per_gene, retrieval
from .batch import (
    batch_asw,
    celltype_asw,
    graph_connectivity,
    ilisi,
    kbet,
    knn_graph,
    knn_graphs,
    lisi,
)
from .labels import accuracy, ari, knn_accuracy, knn_predict, knn_votes, macro_f1, nmi
from .scores import COLUMNS, score_embedding, to_markdown

__all__ = [
    "COLUMNS",
    "accuracy",
    "ari",
    "batch_asw",
    "celltype_asw",
    "foscttm",
    "graph_connectivity",
    "ilisi",
    "kbet",
    "knn_accuracy",
    "knn_graph",
    "knn_graphs",
    "knn_predict",
    "knn_votes",
    "lisi",
    "macro_f1",
    "nmi",
    "pearson_per_cell",
    "pearson_per_gene",
    "retrieval",
    "score_embedding",
    "to_markdown",
]
