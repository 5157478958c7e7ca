"""tl.evaluate: one protocol for every embedding; the table is returned and stored, nothing else written."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atacformer import tl
from atacformer.metrics import COLUMNS


def _cells(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(["a", "b", "c"], 30)
    centres = rng.normal(0, 8, (3, 6))
    truth = centres[np.repeat(np.arange(3), 30)] + rng.normal(0, 1, (90, 6))
    adata = ad.AnnData(np.zeros((90, 1), np.float32), obs=pd.DataFrame(
        {"cell_type": labels, "donor": np.tile(["d1", "d2"], 45)}, index=[f"c{i}" for i in range(90)]))
    adata.obsm["X_truth"], adata.obsm["X_noise"] = truth, rng.normal(size=(90, 6))
    return adata


def test_scores_the_good_embedding_above_noise_and_stores_only_the_table():
    adata = _cells()
    before_obs, before_obsm = list(adata.obs), set(adata.obsm)
    table = tl.evaluate(adata, reps={"truth": "X_truth", "noise": "X_noise"}, labels_key="cell_type",
                        batch_key="donor", reference_batch="d1", key_added="ev")
    assert list(table.index) == ["truth", "noise"]
    assert list(table.columns) == [*COLUMNS, "n_clusters", "resolution"]
    assert table.loc["truth", "ARI"] == 1.0 and table.loc["truth", "transfer_macro_F1"] == 1.0
    assert table.loc["noise", "ARI"] < 0.2 and table.loc["truth", "celltype_ASW"] > table.loc["noise", "celltype_ASW"]
    assert table["n_clusters"].dtype == "Int64" and (table["n_clusters"] == 3).all()
    assert adata.uns["ev"] is table
    assert list(adata.obs) == before_obs and set(adata.obsm) == before_obsm and not adata.obsp  # nothing else


def test_clusters_kept_on_request_and_errors():
    adata = _cells()
    table = tl.evaluate(adata, reps={"truth": "X_truth"}, labels_key="cell_type", clusters_prefix="leiden_")
    assert "iLISI" not in table and adata.obs["leiden_truth"].nunique() == 3
    with pytest.raises(ValueError, match="no 'nope' column"):
        tl.evaluate(adata, reps={"truth": "X_truth"}, labels_key="nope")
    with pytest.raises(ValueError, match="lacks"):
        tl.evaluate(adata, reps={"x": "X_missing"}, labels_key="cell_type")


def test_write_evaluation_json_and_markdown(tmp_path):
    adata = _cells()
    table = tl.evaluate(adata, reps={"truth": "X_truth"}, labels_key="cell_type")
    j, m = tl.write_evaluation(table, tmp_path, name="t", extra={"seed": 0})
    import json

    res = json.loads(j.read_text())
    assert res["seed"] == 0 and res["metrics"]["truth"]["n_clusters"] == 3 and res["metrics"]["truth"]["ARI"] == 1.0
    assert "| truth | 1.000 |" in m.read_text() and "| 3 |" in m.read_text()
