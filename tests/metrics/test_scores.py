"""metrics.score_embedding and to_markdown: pure functions of arrays."""

import numpy as np
import pandas as pd
import pytest

from atacformer.metrics import score_embedding, to_markdown


def test_score_embedding_enables_metrics_by_argument():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 20)
    X = np.where(labels[:, None] == "a", 0.0, 10.0) + rng.normal(0, 1, (40, 3))
    batch = np.tile(["x", "y"], 20)
    plain = score_embedding(X, labels)
    assert set(plain) == {"kNN_acc", "celltype_ASW", "graph_conn"} and plain["kNN_acc"] == 1.0
    full = score_embedding(X, labels, clusters=labels, batch=batch, reference_batch="x", n_neighbors=5)
    assert full["ARI"] == 1.0 and full["transfer_macro_F1"] == 1.0 and full["iLISI"] > 0.5
    with pytest.raises(ValueError, match="reference batch 'z'"):
        score_embedding(X, labels, batch=batch, reference_batch="z")
    with pytest.raises(ValueError, match="39 labels"):
        score_embedding(X, labels[:39])


def test_to_markdown_formats_ints_floats_and_missing():
    t = pd.DataFrame({"ARI": [0.12345, np.nan], "n_clusters": pd.array([6, None], dtype="Int64")}, index=["m1", "m2"])
    md = to_markdown(t)
    assert md.splitlines()[0] == "| method | ARI | n_clusters |"
    assert "| m1 | 0.123 | 6 |" in md and "| m2 |  |  |" in md
