"""Label agreement metrics: ARI, NMI, accuracy, macro-F1 (scikit-learn) and kNN label transfer."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors


def ari(labels, clusters) -> float:
    """Adjusted Rand index between true labels and a clustering.

    Parameters
    ----------
    labels, clusters
        (n_cells,) true labels and cluster assignments.

    Returns
    -------
    ARI: 1 = the same partition, 0 = chance level (can be slightly negative).
    """
    return float(skm.adjusted_rand_score(np.asarray(labels), np.asarray(clusters)))


def nmi(labels, clusters) -> float:
    """Normalized mutual information (arithmetic mean normalisation, as scIB).

    Parameters
    ----------
    labels, clusters
        (n_cells,) true labels and cluster assignments.

    Returns
    -------
    NMI in [0, 1]; higher = clusters tell more about the labels.
    """
    return float(skm.normalized_mutual_info_score(np.asarray(labels), np.asarray(clusters)))


def accuracy(labels, predicted) -> float:
    """Fraction of cells whose predicted label equals the true one.

    Parameters
    ----------
    labels, predicted
        (n_cells,) true and predicted labels (compared as strings).

    Returns
    -------
    Accuracy in [0, 1].
    """
    return float(skm.accuracy_score(np.asarray(labels).astype(str), np.asarray(predicted).astype(str)))


def macro_f1(labels, predicted) -> float:
    """Macro-averaged F1 over the true labels; each class weighs the same whatever its size.

    Parameters
    ----------
    labels, predicted
        (n_cells,) true and predicted labels. Predicted-only classes (such as "unknown") count as errors.

    Returns
    -------
    Macro-F1 in [0, 1].
    """
    y = np.asarray(labels).astype(str)
    p = np.asarray(predicted).astype(str)
    return float(skm.f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0))


def knn_votes(ref_X: np.ndarray, ref_codes: np.ndarray, query_X: np.ndarray, n_classes: int, *,
              n_neighbors: int = 15) -> np.ndarray:
    """Share of each class among the nearest reference cells of each query cell (Euclidean).

    Parameters
    ----------
    ref_X, query_X
        (n_ref, d) reference and (n_query, d) query embeddings.
    ref_codes
        (n_ref,) integer class code of each reference cell, in ``[0, n_classes)``.
    n_classes
        Number of classes.
    n_neighbors
        Reference cells voting for each query cell.

    Returns
    -------
    (n_query, n_classes) vote shares; rows sum to 1.
    """
    k = min(n_neighbors, len(ref_codes))
    idx = NearestNeighbors(n_neighbors=k).fit(ref_X).kneighbors(query_X, return_distance=False)  # (n, k)
    votes = np.zeros((len(query_X), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(query_X)), k), np.asarray(ref_codes)[idx].ravel()), 1.0 / k)
    return votes


def knn_predict(
    ref_X: np.ndarray, ref_labels, query_X: np.ndarray, *, n_neighbors: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of query cells by a majority vote of their nearest reference cells (Euclidean).

    Parameters
    ----------
    ref_X, query_X
        (n_ref, d) reference and (n_query, d) query embeddings.
    ref_labels
        (n_ref,) reference labels.
    n_neighbors
        Reference cells voting for each query cell.

    Returns
    -------
    ``(predicted, confidence)``: (n_query,) labels and the share of neighbours that voted for them.
    """
    classes, codes = np.unique(np.asarray(ref_labels).astype(str), return_inverse=True)
    votes = knn_votes(ref_X, codes, query_X, len(classes), n_neighbors=n_neighbors)  # (n_query, n_classes)
    best = votes.argmax(1)
    return classes[best], votes[np.arange(len(best)), best]


def knn_accuracy(X: np.ndarray, labels, *, n_neighbors: int = 15, query_mask=None) -> float:
    """kNN label-transfer accuracy.

    Parameters
    ----------
    X
        (n_cells, d) embedding.
    labels
        (n_cells,) labels.
    n_neighbors
        Cells voting for each predicted cell.
    query_mask
        (n_cells,) bool: transfer from the cells outside the mask to those in it. ``None``: leave-one-out
        (each cell predicted from its nearest *other* cells).

    Returns
    -------
    Accuracy in [0, 1].
    """
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
