"""Label agreement metrics: ARI, NMI, accuracy, macro-F1 (scikit-learn) and kNN label transfer."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors


def ari(labels, clusters) -> float:
    """Adjusted Rand index between true labels and a clustering."""
    return float(skm.adjusted_rand_score(np.asarray(labels), np.asarray(clusters)))


def nmi(labels, clusters) -> float:
    """Normalized mutual information (arithmetic mean normalisation, as scIB)."""
    return float(skm.normalized_mutual_info_score(np.asarray(labels), np.asarray(clusters)))


def accuracy(labels, predicted) -> float:
    """Fraction of cells whose predicted label equals the true one (labels compared as strings)."""
    return float(skm.accuracy_score(np.asarray(labels).astype(str), np.asarray(predicted).astype(str)))


def macro_f1(labels, predicted) -> float:
    """Macro-averaged F1 over the true labels (predicted-only classes such as "unknown" count as errors)."""
    y = np.asarray(labels).astype(str)
    p = np.asarray(predicted).astype(str)
    return float(skm.f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0))


def knn_votes(ref_X: np.ndarray, ref_codes: np.ndarray, query_X: np.ndarray, n_classes: int, *,
              n_neighbors: int = 15) -> np.ndarray:
    """(n_query, n_classes) share of each class code among the ``n_neighbors`` nearest reference cells
    (Euclidean)."""
    k = min(n_neighbors, len(ref_codes))
    idx = NearestNeighbors(n_neighbors=k).fit(ref_X).kneighbors(query_X, return_distance=False)  # (n, k)
    votes = np.zeros((len(query_X), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(query_X)), k), np.asarray(ref_codes)[idx].ravel()), 1.0 / k)
    return votes


def knn_predict(
    ref_X: np.ndarray, ref_labels, query_X: np.ndarray, *, n_neighbors: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of the ``n_neighbors`` nearest reference cells (Euclidean).

    Returns (predicted label, fraction of the k neighbours that voted for it = confidence)."""
    classes, codes = np.unique(np.asarray(ref_labels).astype(str), return_inverse=True)
    votes = knn_votes(ref_X, codes, query_X, len(classes), n_neighbors=n_neighbors)  # (n_query, n_classes)
    best = votes.argmax(1)
    return classes[best], votes[np.arange(len(best)), best]


def knn_accuracy(X: np.ndarray, labels, *, n_neighbors: int = 15, query_mask=None) -> float:
    """kNN label-transfer accuracy.

    With ``query_mask``: transfer from the cells outside the mask to the cells in it. Without:
    leave-one-out (each cell is predicted from its ``n_neighbors`` nearest *other* cells)."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if query_mask is not None:
        q = np.asarray(query_mask, dtype=bool)
        if q.all() or not q.any():
            raise ValueError("query_mask must select some but not all cells")
        pred, _ = knn_predict(X[~q], labels[~q], X[q], n_neighbors=n_neighbors)
        return accuracy(labels[q], pred)
    k = min(n_neighbors, len(labels) - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    idx = np.array([row[row != i][:k] for i, row in enumerate(idx)])  # drop self, (n, k)
    classes, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((len(labels), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), k), codes[idx].ravel()), 1.0)
    return accuracy(labels, classes[votes.argmax(1)])
