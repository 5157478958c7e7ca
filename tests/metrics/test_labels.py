import numpy as np
import pytest

from atacformer.metrics import accuracy, ari, knn_accuracy, knn_predict, macro_f1, nmi


def test_ari_nmi_hand_cases():
    y = ["a", "a", "b", "b"]
    assert ari(y, [1, 1, 0, 0]) == pytest.approx(1.0)  # relabelling does not matter
    assert nmi(y, [1, 1, 0, 0]) == pytest.approx(1.0)
    # {a,a,b,b} vs {1,2,1,2}: contingency all ones → index 0, expected 2/3·... → ARI = -0.5
    assert ari(y, [1, 2, 1, 2]) == pytest.approx(-0.5)
    assert nmi(y, [1, 2, 1, 2]) == pytest.approx(0.0)


def test_accuracy_and_macro_f1_hand_case():
    y = ["a", "a", "a", "b"]
    p = ["a", "a", "b", "b"]
    assert accuracy(y, p) == pytest.approx(0.75)
    # F1(a) = 2·1·(2/3)/(1+2/3) = 0.8 ; F1(b) = 2·0.5·1/1.5 = 2/3
    assert macro_f1(y, p) == pytest.approx((0.8 + 2 / 3) / 2)
    # a predicted-only class ("unknown") counts as an error but is not averaged in
    assert macro_f1(["a", "b"], ["a", "unknown"]) == pytest.approx(0.5)


def test_knn_predict_votes_and_confidence():
    ref = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    labels = ["x", "x", "x", "y", "y"]
    pred, conf = knn_predict(ref, labels, np.array([[0.05], [10.05]]), n_neighbors=3)
    assert list(pred) == ["x", "y"]
    assert conf[0] == pytest.approx(1.0) and conf[1] == pytest.approx(2 / 3)


def test_knn_accuracy_leave_one_out_and_query():
    X = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    y = ["a", "a", "a", "b", "b", "b"]
    assert knn_accuracy(X, y, n_neighbors=2) == 1.0
    # a lone "b" among "a"s is mis-predicted by leave-one-out
    assert knn_accuracy(X, ["a", "b", "a", "b", "b", "b"], n_neighbors=2) == pytest.approx(5 / 6)
    mask = np.array([True, False, False, True, False, False])
    assert knn_accuracy(X, y, n_neighbors=1, query_mask=mask) == 1.0
    with pytest.raises(ValueError):
        knn_accuracy(X, y, query_mask=np.ones(6, bool))
