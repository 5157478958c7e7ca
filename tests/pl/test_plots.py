import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atacformer import pl

PNG = b"\x89PNG\r\n\x1a\n"


def _adata():
    rng = np.random.default_rng(0)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(0.3, (40, 20)).astype(np.float32)))
    a.obs["cell_type"] = np.repeat(["a", "b"], 20)
    a.obs["batch"] = np.tile(["x", "y"], 20)
    a.obsm["X_umap"] = rng.normal(size=(40, 2))
    return a


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_umap_and_qc(tmp_path):
    a = _adata()
    assert _is_png(pl.umap(a, color=["cell_type", "batch"], path=tmp_path / "u.png"))
    assert _is_png(pl.qc(a, path=tmp_path / "qc.png", groupby="batch"))
    with pytest.raises(ValueError, match="no column"):
        pl.umap(a, color="missing", path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_confusion(tmp_path):
    assert _is_png(pl.confusion(["a", "a", "b"], ["a", "unknown", "b"], path=tmp_path / "c.png"))


def test_training_curves_from_lightning_csv(tmp_path):
    # Lightning CSVLogger layout: one metric per row, NaN elsewhere
    log = pd.DataFrame({"epoch": [0, 0, 1, 1], "step": [9, 9, 19, 19],
                        "train_loss": [2.0, np.nan, 1.5, np.nan], "val_loss": [np.nan, 2.1, np.nan, 1.7]})
    log.to_csv(tmp_path / "metrics.csv", index=False)
    assert list(pl.read_curves(tmp_path / "metrics.csv").columns) == list(log.columns)
    assert _is_png(pl.training_curves(tmp_path / "metrics.csv", path=tmp_path / "t.png"))
    with pytest.raises(ValueError, match="no such"):
        pl.training_curves(tmp_path / "nope.csv", path=tmp_path / "t2.png")
    with pytest.raises(ValueError, match="numeric"):
        pl.training_curves({"step": [1, 2]}, path=tmp_path / "t3.png")
