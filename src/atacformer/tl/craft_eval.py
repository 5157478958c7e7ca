"""The CRAFT evaluation protocol: paired cells split by library, CRAFT and its baselines scored on the
same held-out cells (used by ``benchmarks/craft.py`` and the demo's CRAFT section).

- alignment (ATAC↔RNA of the same held-out cells): FOSCTTM (random = 0.5), top-1/top-10 partner retrieval;
- imputation of log-normalised RNA from ATAC: mean per-gene and per-cell Pearson;
- label transfer RNA reference (training libraries) → ATAC query (held-out libraries): accuracy, macro-F1.

Baselines, fitted on the training cells only: CCA between ATAC LSI and RNA PCA; gene-activity scores
(gene body ± 2 kb) in the RNA PCA; kNN imputation (15 and 50 nearest training cells in ATAC LSI, and 50
nearest training RNA cells in the CCA space); ridge from ATAC TF-IDF to RNA; kNN label transfer in the
CCA space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..metrics.alignment import foscttm, pearson_per_cell, pearson_per_gene, retrieval
from ..metrics.labels import accuracy, knn_predict, macro_f1
from .craft import craft_embed, craft_train, impute_rna
from .gene_activity import (
    PCA,
    fit_cca,
    fit_lsi,
    fit_pca,
    gene_activity,
    knn_impute,
    log_normalize,
    ridge_impute,
)

LABELS = {"coarse": "cell_type_coarse", "fine": "cell_type"}
KNN_IMPUTE = 50  # neighbours of the cross-modal kNN imputations (CRAFT's joint space, the CCA space)


@dataclass
class PairedSplit:
    """Paired cells (``atac`` bins and ``rna`` counts, same rows) and a train/test split of them.
    ``regions``: the ATAC matrix gene activity is computed on (peaks; default the bins)."""

    atac: ad.AnnData
    rna: ad.AnnData
    test: np.ndarray  # (n,) bool
    regions: ad.AnnData | None = None
    Y: np.ndarray = field(init=False)  # (n, G) log-normalised RNA

    def __post_init__(self):
        if list(self.atac.obs_names) != list(self.rna.obs_names):
            raise ValueError("PairedSplit needs the ATAC and RNA cells in the same order (same obs_names)")
        self.test = np.asarray(self.test, dtype=bool)
        if not self.test.any() or self.test.all():
            raise ValueError("the test split must hold some but not all cells")
        self.Y = log_normalize(self.rna.X)

    @property
    def train(self) -> np.ndarray:
        return ~self.test

    @classmethod
    def by_library(cls, atac, rna, *, test: Sequence[str], key: str = "batch", regions=None) -> PairedSplit:
        """Hold out the cells whose ``obs[key]`` is in ``test``."""
        values = atac.obs[key].astype(str)
        if not values.isin(test).any() or values.isin(test).all():
            raise ValueError(f"test libraries {list(test)} must name some but not all of {sorted(values.unique())}")
        return cls(atac, rna, values.isin(test).to_numpy(), regions)


# ------------------------------------------------------------------------------------------ table rows
def alignment_row(method: str, atac_emb: np.ndarray, rna_emb: np.ndarray) -> dict:
    f = foscttm(atac_emb, rna_emb)
    r = retrieval(atac_emb, rna_emb, k=(1, 10))
    return {"method": method, "FOSCTTM": f["mean"], "FOSCTTM atac→rna": f["x_to_y"], "FOSCTTM rna→atac": f["y_to_x"],
            "top1 atac→rna": r["x_to_y_top1"], "top1 rna→atac": r["y_to_x_top1"],
            "top10 atac→rna": r["x_to_y_top10"], "top10 rna→atac": r["y_to_x_top10"]}


def imputation_row(method: str, imputed: np.ndarray, measured: np.ndarray) -> dict:
    g, c = pearson_per_gene(imputed, measured), pearson_per_cell(imputed, measured)
    return {"method": method, "per-gene r": float(np.nanmean(g)), "per-gene r (median)": float(np.nanmedian(g)),
            "per-cell r": float(np.nanmean(c)), "genes scored": int(np.isfinite(g).sum())}


def label_row(method: str, ref_emb, ref_obs: pd.DataFrame, query_emb, query_obs: pd.DataFrame, k: int = 15) -> dict:
    row = {"method": method}
    for name, key in LABELS.items():
        pred, _ = knn_predict(ref_emb, ref_obs[key].astype(str).to_numpy(), query_emb, n_neighbors=k)
        truth = query_obs[key].astype(str).to_numpy()
        row[f"{name} accuracy"], row[f"{name} macro-F1"] = accuracy(truth, pred), macro_f1(truth, pred)
    return row


@dataclass
class Tables:
    """The three result tables (one row per method) and run information."""

    alignment: list[dict] = field(default_factory=list)
    imputation: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def extend(self, other: Tables) -> None:
        """Append the rows of ``other`` (its ``info`` is not merged)."""
        self.alignment += other.alignment
        self.imputation += other.imputation
        self.labels += other.labels

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: pd.DataFrame(rows).set_index("method") for name, rows in
                (("alignment", self.alignment), ("imputation", self.imputation), ("labels", self.labels))}


# ------------------------------------------------------------------------------------------ methods
def _gene_activity(s: PairedSplit, genome: str) -> np.ndarray:
    """(n, G) log-normalised gene activity in the RNA gene order (genes without annotation: 0)."""
    ga = gene_activity(s.regions if s.regions is not None else s.atac, genome=genome, genes=s.rna.var_names)
    ga = ga[:, [g for g in s.rna.var_names if g in ga.var_names]]
    full = np.zeros_like(s.Y)
    full[:, s.rna.var_names.get_indexer(ga.var_names)] = log_normalize(ga.X)
    return full


def baselines(s: PairedSplit, *, genome: str = "mm10", n_lsi: int = 30, n_pca: int = 30, n_cca: int = 20) -> Tables:
    """Every baseline's rows, fitted on the training cells, scored on the test cells."""
    tr, te, Y, X = s.train, s.test, s.Y, s.atac.X
    lsi = fit_lsi(X[tr], n_comps=n_lsi)
    a_tr, a_te = lsi.transform(X[tr]), lsi.transform(X[te])
    pca = fit_pca(Y[tr], n_comps=n_pca)
    r_tr, r_te = pca.transform(Y[tr]), pca.transform(Y[te])
    cca = fit_cca(a_tr, r_tr, n_comps=n_cca)
    ga = _gene_activity(s, genome)
    ga_pca = PCA(ga[tr].mean(0), np.maximum(ga[tr].std(0), 1e-8), pca.components)  # its own scaling
    ridge, alpha = ridge_impute(lsi.tfidf(X[tr]), Y[tr], lsi.tfidf(X[te]))
    t = Tables(info={"ridge_alpha": alpha, "cca_correlations": [round(float(c), 3) for c in cca.corr[:5]]})
    t.alignment += [alignment_row("CCA (ATAC LSI × RNA PCA)", cca.transform_x(a_te), cca.transform_y(r_te)),
                    alignment_row("gene activity in RNA PCA", ga_pca.transform(ga[te]), r_te)]
    t.imputation += [imputation_row("gene activity (body ± 2 kb)", ga[te], Y[te]),
                     imputation_row("ridge (ATAC TF-IDF → RNA)", ridge, Y[te])]
    for k in (15, KNN_IMPUTE):
        t.imputation.append(imputation_row(f"kNN ({k} nearest in ATAC LSI)",
                                           knn_impute(a_tr, Y[tr], a_te, n_neighbors=k), Y[te]))
    cross = knn_impute(cca.transform_y(r_tr), Y[tr], cca.transform_x(a_te), n_neighbors=KNN_IMPUTE)
    t.imputation.append(imputation_row(f"kNN in CCA space ({KNN_IMPUTE} nearest training RNA)", cross, Y[te]))
    obs = s.rna.obs
    t.labels.append(label_row("kNN in CCA space", cca.transform_y(r_tr), obs[tr], cca.transform_x(a_te), obs[te]))
    return t


def _full(s: PairedSplit, imputed: ad.AnnData) -> np.ndarray:
    """Imputed test cells × all RNA genes (0 for genes CRAFT does not know)."""
    full = np.zeros_like(s.Y[s.test])
    full[:, s.rna.var_names.get_indexer(imputed.var_names)] = imputed.X
    return full


def craft_scores(s: PairedSplit, craft, method: str = "CRAFT") -> tuple[Tables, dict]:
    """CRAFT's rows on the test cells (imputation twice: the head, and the training cells' RNA averaged
    over each cell's 50 nearest in the joint space), and the test cells' outputs (``atac``/``rna`` with
    ``obsm['X_craft']``, ``imputed``: the head's, test cells × all RNA genes)."""
    tr, te = s.train, s.test
    atac_te, rna_te, rna_tr = s.atac[te].copy(), s.rna[te].copy(), s.rna[tr].copy()
    for adata, modality in ((atac_te, "atac"), (rna_te, "rna"), (rna_tr, "rna")):
        craft_embed(adata, craft, modality=modality)
    head = _full(s, impute_rna(atac_te, craft))
    knn = _full(s, impute_rna(atac_te, craft, reference=rna_tr, n_neighbors=KNN_IMPUTE))
    t = Tables()
    t.alignment.append(alignment_row(method, atac_te.obsm["X_craft"], rna_te.obsm["X_craft"]))
    t.imputation += [imputation_row(f"{method} head", head, s.Y[te]),
                     imputation_row(f"{method} joint kNN ({KNN_IMPUTE} nearest training RNA)", knn, s.Y[te])]
    t.labels.append(label_row(method, rna_tr.obsm["X_craft"], rna_tr.obs, atac_te.obsm["X_craft"], atac_te.obs))
    return t, {"atac": atac_te, "rna": rna_te, "imputed": head, "imputed_knn": knn}


def train_and_score(s: PairedSplit, *, model, recipe, out_dir: str | Path | None = None, method: str = "CRAFT",
                    trainer_kwargs: dict | None = None):
    """Train CRAFT on the training cells (``model``: the ATAC encoder, see :func:`craft_train`) and score it."""
    craft = craft_train(s.atac[s.train], s.rna[s.train], model=model, recipe=recipe, out_dir=out_dir,
                        overwrite=out_dir is not None, trainer_kwargs=trainer_kwargs)
    tables, outputs = craft_scores(s, craft, method)
    return craft, tables, outputs
