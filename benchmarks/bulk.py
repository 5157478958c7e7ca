"""Bulk region sets (issue 17): pseudo-bulk BED files from real single cells, cell type (and a second label)
predicted on libraries / donors never seen in training.

Region sets: per (library, cell type), random pools of 10–200 cells of that type (log-uniform; at most the
cells there are; hemato's test donor has 5–16 cells of four types, so its pools start at 5); the set's open
regions are the 5 kb bins with >= MIN_INSERTIONS insertions in the pooled cells, so depth varies with the
pool as in real bulk data. Each set is written as a narrowPeak file (signalValue = insertions) with a sample
table and read back with ``atacformer.io.read_bed``, exactly as a real collection would be.

* SNARE-seq adult mouse cortex ATAC (mm10, shipped: ``atacformer.datasets.snareseq``): 8 libraries, 15 coarse
  types (a type makes sets in a library where it has >= 10 cells); train on 09A–09F, test on 09G–09H. Second
  label ``class`` (excitatory / inhibitory / non-neuronal; ``Mis`` has none: missing, ignored by that head).
* hemato (hg19, shipped): train on donor BMMC_D6T1, test on BMMC_D5T1. Second label ``stage``
  (progenitor: HSC, CMP/LMPP, GMP, CLP; mature: B, CD8 naive).

Methods, all in the same run on the same sets:

* atacformer: ``tiny`` pretrained without labels on the single cells of the training libraries (the demo
  recipe, PRETRAIN_STEPS steps, sentences of MAX_LENGTH tokens, about a cell's open bins), fine-tuned on the
  training sets with one head per label column (``tl.finetune(labels_key=["cell_type", <second>])``: a fresh
  random cell-sized subset of each set in every batch), predicted with ``tl.annotate`` averaging K random
  subsets of each test set (K in N_SUBSETS: how many are needed);
* Jaccard nearest neighbour: the label of the training set sharing the most open bins (``tl.similar_sets``
  on ``use_rep="X"``);
* TF-IDF + logistic regression on the bins (IDF of the training sets; class-balanced; C by cross-validation
  grouped by training library).

    python benchmarks/bulk.py [--seed 0] [--dataset snare|hemato|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import atacformer as af
from atacformer.metrics import macro_f1, to_markdown

MAX_CELLS, MIN_INSERTIONS = 200, 1
MIN_CELLS = {"snare": 10, "hemato": 5}  # hemato's test donor has 5-16 cells of four of its types
SETS_PER_GROUP = {"snare": 6, "hemato": 20}  # hemato: 12 (donor, type) groups only
PRETRAIN_STEPS = 300
N_SUBSETS = [1, 4, 16]  # random subsets averaged per test set (how many are needed)
MAX_LENGTH = 192  # tokens per sentence, about a single cell's: sets (hundreds to thousands of bins) are read
# through random subsets of cell size, a fresh one in every training batch, N_SUBSETS averaged at prediction
SNARE_CLASS = {**dict.fromkeys(["L2/3", "L4/5", "L6", "Clau"], "excitatory"),
               **dict.fromkeys(["Pvalb", "Sst", "CGE", "Npy"], "inhibitory"),
               **dict.fromkeys(["Astro", "Oligo", "OPC", "MGC", "Endo", "Peri"], "non-neuronal")}
HEMATO_STAGE = {**dict.fromkeys(["01_HSC", "05_CMP.LMPP", "07_GMP", "15_CLP.2"], "progenitor"),
                **dict.fromkeys(["17_B", "19_CD8.N"], "mature")}


def load(dataset: str):
    """(cells × bins AnnData with obs library/cell_type/<second>, second label name, train libraries)."""
    if dataset == "snare":
        cells, _ = af.datasets.snareseq()
        cells.obs = pd.DataFrame({"library": cells.obs["batch"].astype(str),
                                  "cell_type": cells.obs["cell_type_coarse"].astype(str)}, index=cells.obs_names)
        cells.obs["class"] = cells.obs["cell_type"].map(SNARE_CLASS)
        return cells, "class", ["09A", "09B", "09C", "09D", "09E", "09F"]
    cells = af.datasets.hemato()
    cells.obs = pd.DataFrame({"library": cells.obs["donor"].astype(str),
                              "cell_type": cells.obs["cell_type"].astype(str)}, index=cells.obs_names)
    cells.obs["stage"] = cells.obs["cell_type"].map(HEMATO_STAGE)
    return cells, "stage", ["BMMC_D6T1"]


def draw_sets(cells: ad.AnnData, second: str, rng: np.random.Generator, min_cells: int,
              per_group: int) -> list[dict]:
    """Pseudo-bulk sets: per (library, type) with >= ``min_cells`` cells, ``per_group`` random pools of
    ``min_cells``–MAX_CELLS cells (log-uniform, at most the cells there are)."""
    X = sp.csr_matrix(cells.X)
    out = []
    for (lib, ct), idx in cells.obs.groupby(["library", "cell_type"], observed=True).indices.items():
        if len(idx) < min_cells:
            continue
        for k in range(per_group):
            hi = min(MAX_CELLS, len(idx))
            n = int(round(np.exp(rng.uniform(np.log(min_cells), np.log(hi))))) if hi > min_cells else hi
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


def _tfidf(train: sp.csr_matrix, test: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Binary TF-IDF with the IDF of the training sets only (bins open in >= 2 of them), rows L2-normalised."""
    keep = np.flatnonzero(np.asarray((train > 0).sum(0)).ravel() >= 2)
    idf = np.log1p(train.shape[0] / (1.0 + np.asarray((train[:, keep] > 0).sum(0)).ravel()))
    out = []
    for M in (train, test):
        B = sp.csr_matrix(M[:, keep] > 0, dtype=np.float64)
        B = sp.diags(1.0 / np.maximum(np.asarray(B.sum(1)).ravel(), 1)) @ B
        B.data = np.log1p(B.data * 1e4)
        B = sp.csr_matrix(B @ sp.diags(idf))
        out.append(sp.diags(1.0 / np.maximum(np.sqrt(np.asarray(B.multiply(B).sum(1)).ravel()), 1e-12)) @ B)
    return out[0], out[1]


def tfidf_lr(train: ad.AnnData, test: ad.AnnData, column: str, seed: int) -> np.ndarray:
    """Class-balanced logistic regression on TF-IDF of the open bins; C from {0.1, 1, 10, 100} by
    grouped cross-validation over the training libraries (donors: plain 3-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score

    Ttr, Tte = _tfidf(sp.csr_matrix(train.X), sp.csr_matrix(test.X))
    ok = train.obs[column].notna().to_numpy()
    Xtr, y, groups = Ttr[ok], train.obs[column].astype(str).to_numpy()[ok], train.obs["library"].to_numpy()[ok]
    n_groups = len(set(groups))
    cv = GroupKFold(min(3, n_groups)) if n_groups > 1 else StratifiedKFold(3, shuffle=True, random_state=seed)
    best = None
    for C in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
        score_c = cross_val_score(clf, Xtr, y, groups=groups if n_groups > 1 else None, cv=cv).mean()
        best = max(best or (score_c, C), (score_c, C))
    clf = LogisticRegression(C=best[1], max_iter=2000, class_weight="balanced", random_state=seed).fit(Xtr, y)
    return clf.predict(Tte)


def atacformer_model(cells: ad.AnnData, work: Path, seed: int) -> af.models.Atacformer:
    """``tiny`` pretrained without labels on the single cells of the training libraries (the demo recipe,
    one library per batch, PRETRAIN_STEPS steps; sentences of MAX_LENGTH tokens)."""
    from atacformer.train import PretrainRecipe, pretrain

    plain = ad.AnnData(cells.X, obs=cells.obs[["library"]].copy(), var=cells.var[[]].copy(), uns=dict(cells.uns))
    recipe = PretrainRecipe.demo(seed).replace(trainer={"max_steps": PRETRAIN_STEPS, "progress_bar": False},
                                               data={"batch_key": "library"})
    recipe = recipe.replace(model={**recipe.model, "max_length": MAX_LENGTH})
    return pretrain(plain, out_dir=work / "model", recipe=recipe, overwrite=True).eval()


def atacformer_predict(model, train: ad.AnnData, test: ad.AnnData, columns: list[str], seed: int,
                       n_subsets: list[int]) -> tuple[dict, dict]:
    """Fine-tune one head per column on the training sets (a fresh random subset of each set's bins in every
    batch), predict the test sets averaging each of ``n_subsets``; ({K: {column: labels}}, fine-tune info)."""
    from atacformer.train import FinetuneRecipe

    recipe = FinetuneRecipe.region_sets(seed)
    t0 = time.perf_counter()
    tuned = af.tl.finetune(train, model, labels_key=columns, recipe=recipe)
    info = train.uns["atacformer_finetune"]
    info = {"best_epoch": info["best_epoch"], "n_train": info["n_train"], "n_val": info["n_val"],
            "finetune_s": round(time.perf_counter() - t0, 1)}
    preds, t0 = {}, time.perf_counter()
    for k in n_subsets:
        af.tl.annotate(test, tuned, threshold=0.0, n_subsets=k, key_added=f"af{k}")
        preds[k] = {c: test.obs[f"af{k}_{c}" if len(columns) > 1 else f"af{k}"].astype(str).to_numpy()
                    for c in columns}
    info["predict_s"] = round(time.perf_counter() - t0, 1)
    return preds, info


def run_dataset(dataset: str, seed: int, work: Path) -> tuple[list[dict], dict]:
    """All methods on one dataset's sets: score rows (method, label, accuracy, macro-F1) and run facts."""
    cells, second, train_libs = load(dataset)
    sets = draw_sets(cells, second, np.random.default_rng(seed), MIN_CELLS[dataset], SETS_PER_GROUP[dataset])
    adata = write_and_read(sets, cells.uns["genome"], work / f"{dataset}_bed", second)
    is_train = adata.obs["library"].isin(train_libs).to_numpy()
    train, test = adata[is_train].copy(), adata[~is_train].copy()
    columns, rows, facts = ["cell_type", second], [], {"n_train": int(train.n_obs), "n_test": int(test.n_obs)}
    facts["bins_per_set"] = [int(np.percentile(np.diff(adata.X.indptr), q)) for q in (0, 50, 100)]
    for col in columns:
        for method, fn in (("Jaccard NN", lambda c: jaccard_nn(train, test, c)),
                           ("TF-IDF + LR", lambda c: tfidf_lr(train, test, c, seed))):
            t0 = time.perf_counter()
            rows.append({"dataset": dataset, "method": method, "label": col, **score(test.obs[col], fn(col)),
                         "seconds": round(time.perf_counter() - t0, 1)})
    t0 = time.perf_counter()
    model = atacformer_model(cells[cells.obs["library"].isin(train_libs).to_numpy()], work / dataset, seed)
    facts["pretrain_s"] = round(time.perf_counter() - t0, 1)
    preds, info = atacformer_predict(model, train, test, columns, seed, N_SUBSETS)
    facts.update(info)
    for k, by_col in preds.items():
        for col in columns:
            rows.append({"dataset": dataset, "method": f"atacformer (K={k})", "label": col,
                         **score(test.obs[col], by_col[col])})
    return rows, facts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", choices=["snare", "hemato", "both"], default="both")
    p.add_argument("--json", default=None, help="also write the rows and run facts to this JSON file")
    args = p.parse_args(argv)
    t0, rows, facts = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in (["snare", "hemato"] if args.dataset == "both" else [args.dataset]):
            r, f = run_dataset(dataset, args.seed, Path(tmp))
            rows += r
            facts[dataset] = f
            print(dataset, f, flush=True)
    facts["total_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "facts": facts}, indent=1))
    table = pd.DataFrame(rows)
    for (dataset, label), sub in table.groupby(["dataset", "label"], sort=False):
        print(f"\n{dataset}, {label} (test sets of unseen libraries/donors)")
        print(to_markdown(sub.set_index("method")[["accuracy", "macro_f1", "n"]]), end="")
    print(f"total {facts['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
