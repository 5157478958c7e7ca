import anndata as ad
import matplotlib.pyplot as plt
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


def test_umap_and_qc_save_png_and_return_axes(tmp_path):
    a = _adata()
    axes = pl.umap(a, color=["cell_type", "batch"], title=["type", "batch"], save=tmp_path / "u.png", show=False)
    assert _is_png(tmp_path / "u.png") and [ax.get_title() for ax in axes] == ["type", "batch"]
    axes = pl.qc(a, groupby="batch", title="toy", save=tmp_path / "qc.png", show=False)
    assert _is_png(tmp_path / "qc.png") and axes[0].get_title() == "toy: open bins per cell"
    assert len(axes[0].patches) == 2  # one outlined (step) histogram per group, neither hidden behind the other
    assert pl.umap(a, color="cell_type", save=tmp_path / "u2.png") is None  # show=None + save: nothing returned
    with pytest.raises(ValueError, match="no column"):
        pl.umap(a, color="missing", save=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_plots_draw_into_a_given_axes():
    fig, (left, right) = plt.subplots(1, 2)
    a = _adata()
    assert pl.umap(a, color="cell_type", ax=left, show=False) is left
    assert pl.confusion(["a", "a", "b"], ["a", "unknown", "b"], ax=right, show=False) is right
    assert len(left.collections) == 2 and right.get_xlabel() == "predicted"
    with pytest.raises(ValueError, match="single panel"):
        pl.umap(a, color=["cell_type", "batch"], ax=left)
    plt.close(fig)


def test_confusion(tmp_path):
    ax = pl.confusion(["a", "a", "b"], ["a", "unknown", "b"], save=tmp_path / "c.png", show=False)
    assert _is_png(tmp_path / "c.png") and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "unknown"]


def test_training_curves_from_lightning_csv(tmp_path):
    # Lightning CSVLogger layout: one metric per row, NaN elsewhere
    log = pd.DataFrame({"epoch": [0, 0, 1, 1], "step": [9, 9, 19, 19],
                        "train_loss": [2.0, np.nan, 1.5, np.nan], "val_loss": [np.nan, 2.1, np.nan, 1.7],
                        "val_macro_f1": [np.nan, 0.5, np.nan, 0.6]})
    log.to_csv(tmp_path / "metrics.csv", index=False)
    assert list(pl.read_curves(tmp_path / "metrics.csv").columns) == list(log.columns)
    axes = pl.training_curves(tmp_path / "metrics.csv", save=tmp_path / "t.png", show=False)
    assert _is_png(tmp_path / "t.png")
    # train and val of one metric share a panel; panels carry readable names, losses first
    assert [ax.get_title() for ax in axes] == ["total loss", "macro-F1 (validation)"]
    assert [line.get_label() for line in axes[0].lines] == ["training", "validation"]
    with pytest.raises(ValueError, match="no such"):
        pl.training_curves(tmp_path / "nope.csv", save=tmp_path / "t2.png")
    with pytest.raises(ValueError, match="numeric"):
        pl.training_curves({"step": [1, 2]}, save=tmp_path / "t3.png")


def test_table_html_has_one_header_row_and_integer_counts():
    t = pd.DataFrame({"ARI": [0.5], "n_clusters": pd.array([6], dtype="Int64")}, index=pd.Index(["m"], name="method"))
    html = pl.table_html(t)
    assert html.count("<tr") == 2 and "<td>6</td>" in html and "<td>0.500</td>" in html and "<th>method</th>" in html
