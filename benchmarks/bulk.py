"""Bulk region sets (issue 17): pseudo-bulk BED files from real single cells, cell type (and a second label)
predicted on libraries / donors never seen in training.

Region sets: per (library, cell type), random subsets of 10–200 cells of that type (log-uniform; at most the
cells there are) are pooled; the set's open regions are the 5 kb bins with >= MIN_INSERTIONS insertions in
the pooled cells. Each set is written as a narrowPeak file (signalValue = insertions) and read back with
``atacformer.io.read_bed`` and a sample table, exactly as a real collection would be.

* SNARE-seq adult mouse cortex ATAC (mm10, /work/shared): 8 libraries (obs['batch']), 15 coarse types
  (types with >= 10 cells in a library make sets); train on 09A–09F, test on 09G–09H. Second label:
  ``class`` (excitatory / inhibitory / non-neuronal; ``Mis`` has none: missing, ignored by that head).
* hemato (hg19, shipped): train on donor BMMC_D6T1, test on BMMC_D5T1. Second label: ``stage``
  (progenitor: HSC, CMP/LMPP, GMP, CLP; mature: B, CD8 naive).

Methods, all in the same run on the same sets:

* atacformer: ``tiny`` pretrained on the single cells of the training libraries (the measured in-memory
  recipe, no labels), fine-tuned on the training sets with one head per label column
  (``tl.finetune(labels_key=["cell_type", <second>])``), predicted with ``tl.annotate`` averaging
  ``n_subsets`` random subsets of each set (max_length MAX_LENGTH tokens);
* Jaccard nearest neighbour: the label of the training set sharing the most open bins (``tl.similar_sets``
  on ``use_rep="X"``);
* TF-IDF + logistic regression on the bins (class-balanced; C chosen by cross-validation over the training
  libraries).

    python benchmarks/bulk.py [--seed 0] [--dataset snare|hemato|both]
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import atacformer as af
from atacformer.metrics import macro_f1

SNARE = Path("/work/shared/data/snareseq_mouse_cortex_mm10/atac.h5ad")
MIN_CELLS, MAX_CELLS, MIN_INSERTIONS = 10, 200, 2
SETS_PER_GROUP = 6
MAX_LENGTH = 512  # tokens per sentence: the larger sets (up to ~3,700 bins) are read through subsets
SNARE_CLASS = {**dict.fromkeys(["L2/3", "L4/5", "L6", "Clau"], "excitatory"),
               **dict.fromkeys(["Pvalb", "Sst", "CGE", "Npy"], "inhibitory"),
               **dict.fromkeys(["Astro", "Oligo", "OPC", "MGC", "Endo", "Peri"], "non-neuronal")}
HEMATO_STAGE = {**dict.fromkeys(["01_HSC", "05_CMP.LMPP", "07_GMP", "15_CLP.2"], "progenitor"),
                **dict.fromkeys(["17_B", "19_CD8.N"], "mature")}


def load(dataset: str):
    """(cells × bins AnnData with obs library/cell_type/<second>, second label name, train libraries)."""
    if dataset == "snare":
        cells = af.io.read_region_matrix(SNARE, genome="mm10")
        cells.obs = pd.DataFrame({"library": cells.obs["batch"].astype(str),
                                  "cell_type": cells.obs["cell_type_coarse"].astype(str)}, index=cells.obs_names)
        cells.obs["class"] = cells.obs["cell_type"].map(SNARE_CLASS)
        return cells, "class", ["09A", "09B", "09C", "09D", "09E", "09F"]
    cells = af.io.read_region_matrix(af.genome.data_path("hemato_10x_hg19.h5ad"), genome="hg19")
    cells.obs = pd.DataFrame({"library": cells.obs["donor"].astype(str),
                              "cell_type": cells.obs["cell_type"].astype(str)}, index=cells.obs_names)
    cells.obs["stage"] = cells.obs["cell_type"].map(HEMATO_STAGE)
    return cells, "stage", ["BMMC_D6T1"]


def draw_sets(cells: ad.AnnData, second: str, rng: np.random.Generator) -> list[dict]:
    """Pseudo-bulk sets: per (library, type) with >= MIN_CELLS cells, SETS_PER_GROUP random pools."""
    X = sp.csr_matrix(cells.X)
    out = []
    for (lib, ct), idx in cells.obs.groupby(["library", "cell_type"], observed=True).indices.items():
        if len(idx) < MIN_CELLS:
            continue
        for k in range(SETS_PER_GROUP):
            hi = min(MAX_CELLS, len(idx))
            n = int(round(np.exp(rng.uniform(np.log(MIN_CELLS), np.log(hi))))) if hi > MIN_CELLS else hi
            pooled = np.asarray(X[rng.choice(idx, n, replace=False)].sum(0)).ravel()
            bins = np.flatnonzero(pooled >= MIN_INSERTIONS)
            if len(bins):
                out.append({"sample": f"{lib}_{ct.replace('/', '')}_{k}", "library": lib, "cell_type": ct,
                            second: cells.obs[second].iloc[idx[0]], "n_cells": n, "bins": bins,
                            "signal": pooled[bins]})
    return out


def write_and_read(sets: list[dict], genome: str, folder: Path, second: str) -> ad.AnnData:
    """Write each set as ``<sample>.narrowPeak`` + ``samples.tsv`` in ``folder``; read them back (io.read_bed)."""
    folder.mkdir(parents=True, exist_ok=True)
    bins = af.get_genome(genome).bins(5000)
    var = bins.var()
    paths = []
    for s in sets:
        v = var.iloc[s["bins"]]
        score = np.minimum(1000, 100 * s["signal"]).astype(int)
        lines = [f"{c}\t{a}\t{b}\t{s['sample']}_{i}\t{sc}\t.\t{sig}\t-1\t-1\t{(b - a) // 2}"
                 for i, (c, a, b, sc, sig) in enumerate(zip(v["chrom"], v["start"], v["end"], score, s["signal"],
                                                            strict=True))]
        path = folder / f"{s['sample']}.narrowPeak"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    table = pd.DataFrame([{k: s[k] for k in ("sample", "library", "cell_type", second, "n_cells")} for s in sets])
    table.to_csv(folder / "samples.tsv", sep="\t", index=False)
    return af.io.read_bed(paths, genome=genome, sample_table=folder / "samples.tsv")


def _codes(values: pd.Series) -> np.ndarray:
    return values.astype(object).where(values.notna(), None).to_numpy()


def score(truth: pd.Series, pred) -> dict:
    """Accuracy and macro-F1 over the sets with a label."""
    ok = truth.notna().to_numpy()
    t, p = truth.astype(str).to_numpy()[ok], np.asarray(pred, dtype=str)[ok]
    return {"accuracy": float((t == p).mean()), "macro_f1": float(macro_f1(t, p)), "n": int(ok.sum())}


def jaccard_nn(train: ad.AnnData, test: ad.AnnData, column: str) -> np.ndarray:
    """Label of the training set with the largest Jaccard index of open bins (among those with a label)."""
    ref = train[train.obs[column].notna().to_numpy()]
    table = af.tl.similar_sets(test, ref, use_rep="X", n_neighbors=1, key_added="jaccard_nn")
    return ref.obs[column].astype(str).loc[table["reference"]].to_numpy()


def tfidf_lr(train: ad.AnnData, test: ad.AnnData, column: str, seed: int) -> np.ndarray:
    """Class-balanced logistic regression on TF-IDF of the open bins (bins open in >= 2 training sets);
    C from {0.1, 1, 10, 100} by grouped cross-validation over the training libraries."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score

    from atacformer.metrics import tfidf

    keep = np.flatnonzero(np.asarray((train.X > 0).sum(0)).ravel() >= 2)
    both = sp.vstack([train.X[:, keep], test.X[:, keep]]).astype(bool).astype(np.float64)
    T = tfidf(sp.csr_matrix(both))
    ok = train.obs[column].notna().to_numpy()
    Xtr, y, groups = T[: train.n_obs][ok], train.obs[column].astype(str).to_numpy()[ok], train.obs["library"][ok]
    n_groups = min(3, groups.nunique())
    best = None
    for C in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced", random_state=seed)
        cv = cross_val_score(clf, Xtr, y, groups=groups, cv=GroupKFold(n_groups)).mean() if n_groups > 1 else 0
        best = max(best or (cv, C), (cv, C))
    clf = LogisticRegression(C=best[1], max_iter=3000, class_weight="balanced", random_state=seed).fit(Xtr, y)
    return clf.predict(T[train.n_obs :])
