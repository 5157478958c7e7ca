"""CRAFT evaluation protocol on the shipped SNARE-seq cortex (paired RNA + ATAC, mm10), split by library.

Train on some sequencing libraries, evaluate on the cells of libraries never seen in training:

- alignment (ATAC↔RNA of the same held-out cells): FOSCTTM (random = 0.5) and top-1/top-10 retrieval of the
  true partner, both directions;
- imputation of log-normalised RNA from ATAC: mean per-gene and per-cell Pearson on the held-out cells;
- label transfer RNA reference (training libraries) → ATAC query (held-out libraries): accuracy and
  macro-F1 on coarse and fine cell types.

Baselines (all fitted on the training libraries only): CCA between ATAC LSI and RNA PCA; gene-activity
scores (gene body ± 2 kb, on the shipped peaks) in the RNA PCA; kNN imputation (15 nearest training cells
in ATAC LSI); ridge from ATAC TF-IDF to RNA. ATAC enters as 5 kb mm10 bins, as everywhere else.

    python benchmarks/craft.py [--test-libraries 09G,09H] [-o OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atacformer._snareseq import snareseq
from atacformer.metrics import to_markdown
from atacformer.metrics.alignment import (
    foscttm,
    pearson_per_cell,
    pearson_per_gene,
    retrieval,
)
from atacformer.metrics.labels import accuracy, knn_predict, macro_f1
from atacformer.tl.craft import craft_embed, craft_train, impute_rna
from atacformer.tl.gene_activity import (
    PCA,
    fit_cca,
    fit_lsi,
    fit_pca,
    gene_activity,
    knn_impute,
    log_normalize,
    ridge_impute,
)
from atacformer.train import pretrain
from atacformer.train.craft import CraftRecipe

LABELS = {"coarse": "cell_type_coarse", "fine": "cell_type"}
#: CRAFT variants measured against each other: (RNA encoder, imputation likelihood) changes of the recipe
VARIANTS = {
    "mlp-nb": {},
    "tokens-nb": {"rna": {"kind": "tokens", "d_model": 64, "d_ff": 128, "n_heads": 4, "max_genes": 128}},
    "mlp-poisson": {"likelihood": "poisson"},
    "mlp-mse": {"likelihood": "mse"},
}


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
        pred, _ = knn_predict(ref_emb, ref_obs[key].astype(str).to_numpy(), query_emb, k=k)
        truth = query_obs[key].astype(str).to_numpy()
        row[f"{name} accuracy"], row[f"{name} macro-F1"] = accuracy(truth, pred), macro_f1(truth, pred)
    return row


def load(test_libraries: list[str]) -> dict:
    atac, rna = snareseq()
    regions, _ = snareseq(bin_size=None)
    test = atac.obs["batch"].isin(test_libraries).to_numpy()
    if not test.any() or test.all():
        raise SystemExit(f"--test-libraries {test_libraries} must name some but not all of "
                         f"{sorted(atac.obs['batch'].unique())}")
    return {"atac": atac, "rna": rna, "regions": regions, "train": ~test, "test": test,
            "Y": log_normalize(rna.X)}


def baselines(d: dict, *, n_lsi: int = 30, n_pca: int = 30, n_cca: int = 20) -> tuple[list, list, list, dict]:
    tr, te, Y, X = d["train"], d["test"], d["Y"], d["atac"].X
    lsi = fit_lsi(X[tr], n_comps=n_lsi)
    a_tr, a_te = lsi.transform(X[tr]), lsi.transform(X[te])
    pca = fit_pca(Y[tr], n_comps=n_pca)
    r_tr, r_te = pca.transform(Y[tr]), pca.transform(Y[te])
    cca = fit_cca(a_tr, r_tr, n_comps=n_cca)
    ga = gene_activity(d["regions"], genome="mm10", genes=d["rna"].var_names)
    ga = ga[:, [g for g in d["rna"].var_names if g in ga.var_names]]
    cols = d["rna"].var_names.get_indexer(ga.var_names)
    ga_full = np.zeros_like(Y)
    ga_full[:, cols] = log_normalize(ga.X)
    ga_pca = PCA(ga_full[tr].mean(0), np.maximum(ga_full[tr].std(0), 1e-8), pca.components)  # its own scaling
    align = [alignment_row("CCA (ATAC LSI × RNA PCA)", cca.transform_x(a_te), cca.transform_y(r_te)),
             alignment_row("gene activity in RNA PCA", ga_pca.transform(ga_full[te]), r_te)]
    ridge, alpha = ridge_impute(lsi.tfidf(X[tr]), Y[tr], lsi.tfidf(X[te]))
    impute = [imputation_row("gene activity (body ± 2 kb)", ga_full[te], Y[te]),
              imputation_row("kNN (15 nearest in ATAC LSI)", knn_impute(a_tr, Y[tr], a_te, n_neighbors=15), Y[te]),
              imputation_row("ridge (ATAC TF-IDF → RNA)", ridge, Y[te])]
    obs = d["rna"].obs
    labels = [label_row("kNN in CCA space", cca.transform_y(r_tr), obs[tr], cca.transform_x(a_te), obs[te])]
    info = {"n_genes_with_activity": len(cols), "ridge_alpha": alpha,
            "cca_correlations": [round(float(c), 3) for c in cca.corr[:5]]}
    return align, impute, labels, info


def pretrain_encoder(d: dict, *, steps: int, out_dir: Path, seed: int = 0):
    """The ATAC encoder every CRAFT variant starts from: the recipe's on-the-fly pretraining (tiny preset)
    on the training libraries' ATAC cells only, one library per batch."""
    recipe = CraftRecipe().pretrain.replace(trainer={"max_steps": steps, "log_every_n_steps": 25, "progress_bar": False},
                                            data={"batch_key": "batch", "batch_size": 32}, seed=seed)
    return pretrain(d["atac"][d["train"]], out_dir=out_dir, recipe=recipe, overwrite=True)


def craft_rows(name: str, d: dict, encoder, recipe: CraftRecipe, out_dir: Path) -> tuple[dict, dict, dict]:
    """Train CRAFT on the training libraries; score it on the held-out ones like the baselines."""
    tr, te = d["train"], d["test"]
    craft = craft_train(d["atac"][tr], d["rna"][tr], model=encoder, recipe=recipe, out_dir=out_dir, overwrite=True)
    atac_te, rna_te, rna_tr = d["atac"][te].copy(), d["rna"][te].copy(), d["rna"][tr].copy()
    for adata, modality in ((atac_te, "atac"), (rna_te, "rna"), (rna_tr, "rna")):
        craft_embed(adata, craft, modality=modality)
    imputed = impute_rna(atac_te, craft)
    full = np.zeros_like(d["Y"][te])
    full[:, d["rna"].var_names.get_indexer(imputed.var_names)] = imputed.X  # genes never seen in training: 0
    method = f"CRAFT ({name})"
    return (alignment_row(method, atac_te.obsm["X_craft"], rna_te.obsm["X_craft"]),
            imputation_row(method, full, d["Y"][te]),
            label_row(method, rna_tr.obsm["X_craft"], rna_tr.obs, atac_te.obsm["X_craft"], atac_te.obs))


def run_craft(d: dict, variants: list[str], *, steps: int | None, pretrain_steps: int, seed: int = 0
              ) -> tuple[list, list, list, dict]:
    """Pretrain the ATAC encoder once, then train and score each CRAFT variant from it."""
    align, impute, labels, seconds = [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        encoder = pretrain_encoder(d, steps=pretrain_steps, out_dir=Path(tmp) / "pretrain", seed=seed)
        seconds["pretrain"] = round(time.perf_counter() - t, 1)
        for name in variants:
            recipe = CraftRecipe(seed=seed).replace(model=VARIANTS[name], trainer={"progress_bar": False,
                                                                                   "ckpt_every_n_steps": None})
            if steps is not None:
                recipe = recipe.replace(trainer={"max_steps": steps})
            t = time.perf_counter()
            rows = craft_rows(name, d, encoder, recipe, Path(tmp) / name)
            seconds[name] = round(time.perf_counter() - t, 1)
            for table, row in zip((align, impute, labels), rows):
                table.append(row)
            print(f"{name}: {seconds[name]} s  " + "  ".join(f"{k} {v:.3f}" for k, v in
                  {"FOSCTTM": rows[0]["FOSCTTM"], "per-gene r": rows[1]["per-gene r"],
                   "coarse F1": rows[2]["coarse macro-F1"], "fine F1": rows[2]["fine macro-F1"]}.items()), flush=True)
    return align, impute, labels, seconds


def show(title: str, rows: list[dict]) -> None:
    print(f"\n### {title}\n")
    print(to_markdown(pd.DataFrame(rows).set_index("method")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-libraries", default="09G,09H", help="held-out libraries (comma-separated)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"CRAFT variants ({', '.join(VARIANTS)})")
    parser.add_argument("--steps", type=int, help="CRAFT training steps (default: the recipe's)")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="ATAC encoder pretraining steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="also write the tables as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    t0 = time.perf_counter()
    d = load(args.test_libraries.split(","))
    align, impute, labels, info = baselines(d)
    c_align, c_impute, c_labels, seconds = run_craft(d, args.variants.split(","), steps=args.steps,
                                                     pretrain_steps=args.pretrain_steps, seed=args.seed)
    align, impute, labels = align + c_align, impute + c_impute, labels + c_labels
    info["seconds"] = seconds
    n_tr, n_te = int(d["train"].sum()), int(d["test"].sum())
    print(f"SNARE-seq cortex: {n_tr} training cells ({', '.join(sorted(d['atac'].obs['batch'][d['train']].unique()))}),"
          f" {n_te} held-out cells ({args.test_libraries}); {d['rna'].n_vars} genes; {info}")
    show("Alignment (held-out libraries; FOSCTTM lower is better, random 0.5)", align)
    show("RNA imputation from ATAC (held-out libraries, log-normalised)", impute)
    show("Label transfer RNA reference → ATAC query", labels)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"alignment": align, "imputation": impute, "labels": labels, "info": info}, fh, indent=1)


if __name__ == "__main__":
    main()
