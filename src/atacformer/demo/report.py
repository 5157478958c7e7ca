"""The demo's ``report.html``: the quality targets, how to read the metrics, data/QC, pretraining,
clustering, annotation, integration, the files written and the timings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..pl import Report

SECTIONS = ("Summary", "How to read this report", "Data and QC", "Pretraining", "Clustering", "Annotation",
            "Integration", "CRAFT: RNA + ATAC", "Output files", "Timings")
_CLUSTER_COLS = ["ARI", "NMI", "kNN_acc", "celltype_ASW", "graph_conn", "n_clusters", "resolution"]
_BATCH_COLS = ["iLISI", "kBET", "batch_ASW", "celltype_ASW", "graph_conn", "ARI", "transfer_macro_F1"]

#: how the report's tables name the metrics (↑: higher is better)
COLUMN_NAMES = {"ARI": "ARI ↑", "NMI": "NMI ↑", "kNN_acc": "kNN accuracy ↑", "celltype_ASW": "cell-type ASW ↑",
                "transfer_macro_F1": "transfer macro-F1 ↑", "iLISI": "iLISI ↑", "kBET": "kBET ↑",
                "batch_ASW": "batch ASW ↑", "graph_conn": "graph connectivity ↑", "n_clusters": "clusters",
                "resolution": "Leiden resolution"}

#: what each metric measures; every one lies in [0, 1] and higher is better
METRICS = {
    "ARI (adjusted Rand index)": "Agreement between the Leiden clusters and the cell-type labels, corrected for "
    "chance: 1 = the same partition, 0 = no better than random. Higher is better.",
    "NMI (normalised mutual information)": "How much knowing a cell's cluster tells you about its label, from 0 "
    "(nothing) to 1 (everything). Higher is better.",
    "kNN accuracy": "Each cell's label predicted by a vote of its 15 nearest other cells in the embedding "
    "(leave-one-out): the share predicted right. Higher is better.",
    "transfer macro-F1": "Labels of the query donor predicted from the reference donor only (a kNN vote among "
    "reference cells, or the fine-tuned head), scored by the F1 of each cell type averaged with equal weight, so "
    "a rare type counts as much as a common one. Higher is better.",
    "iLISI (integration LISI)": "How many donors are present in each cell's neighbourhood (Harmony's LISI, median "
    "over cells), scaled from 0 (one donor per neighbourhood) to 1 (donors perfectly mixed). Higher = better mixing.",
    "kBET": "Share of neighbourhoods whose donor mix is statistically indistinguishable from the overall mix "
    "(χ² test at 5 %, within each cell type). Higher = better mixing.",
    "batch ASW": "1 − |silhouette of the donor labels| within each cell type: 1 = the donors cannot be told apart "
    "inside a cell type. Higher = better mixing.",
    "cell-type ASW": "(silhouette of the cell-type labels + 1) / 2: high when cells of a type sit close together "
    "and away from other types (biology kept). Higher is better.",
    "graph connectivity": "For each cell type, the share of its cells in the largest connected piece of the kNN "
    "graph restricted to that type, averaged: 1 = every type forms one connected group. Higher is better.",
}

BASELINES = {
    "LSI": "TF-IDF + LSI, the Signac/ArchR standard: log TF-IDF of the bin counts, truncated SVD, the component "
    "correlated with sequencing depth dropped. No training.",
    "spectral": "SnapATAC2's spectral embedding: cosine similarity of IDF-weighted binarised cells, eigenvectors "
    "of the normalised similarity graph. No training.",
    "atacformer": "The <cls> vector of the model pretrained here without labels.",
    "atacformer fine-tuned head": "The model with a cell-type head fine-tuned on the reference donor's labels.",
    "atacformer adversarial only": "The model fine-tuned with a batch discriminator (gradient reversal), "
    "before the MNN correction.",
    "atacformer integrated": "That model's output after the label-free MNN correction toward the larger donor.",
}


def targets(t_hem: pd.DataFrame) -> pd.DataFrame:
    """The issue's quality targets, measured: value, what it is compared with, met or not."""
    best_base = max(t_hem.loc["LSI", "ARI"], t_hem.loc["spectral", "ARI"])
    f1 = t_hem.loc["atacformer fine-tuned head", "transfer_macro_F1"]
    raw, cor = t_hem.loc["atacformer"], t_hem.loc["atacformer integrated"]
    rows = [
        ("hemato ARI ≥ max(LSI, spectral)", t_hem.loc["atacformer", "ARI"], best_base,
         t_hem.loc["atacformer", "ARI"] >= best_base),
        ("annotation macro-F1 on held-out donor ≥ 0.90", f1, 0.90, f1 >= 0.90),
        ("integration iLISI up", cor["iLISI"], raw["iLISI"], cor["iLISI"] > raw["iLISI"]),
        ("integration cell-type ASW not down", cor["celltype_ASW"], raw["celltype_ASW"],
         cor["celltype_ASW"] >= raw["celltype_ASW"]),
    ]
    return pd.DataFrame(rows, columns=["target", "measured", "compared with", "met"]).set_index("target")


def head_vs_knn(t_hem: pd.DataFrame, query_class_sizes: dict[str, int]) -> str:
    """One or two sentences on the fine-tuned head against kNN transfer on the pretrained embedding."""
    head = t_hem.loc["atacformer fine-tuned head", "transfer_macro_F1"]
    knn = t_hem.loc["atacformer", "transfer_macro_F1"]
    small = ", ".join(f"{k}: {v} cells" for k, v in sorted(query_class_sizes.items(), key=lambda kv: kv[1])[:3])
    order = "below" if head < knn else "above"
    return (f"Fine-tuned head vs kNN transfer: here the head ({head:.3f}) scores {order} a plain kNN vote on the "
            f"pretrained embedding ({knn:.3f}). The head is trained on one donor's cells and must carry over to the "
            "other donor's depth and batch shift, while kNN fits nothing and only needs a query cell's nearest "
            f"reference cells to share its type. With few query cells in the smallest classes ({small}), one or two "
            "cells move macro-F1 by several points, so a gap of a few points between the two says little.")


def lsi_mixing(t_hem: pd.DataFrame) -> str:
    """One or two sentences on why LSI can mix donors better than the integrated embedding."""
    lsi, cor = t_hem.loc["LSI"], t_hem.loc["atacformer integrated"]
    order = "higher" if lsi["iLISI"] > cor["iLISI"] else "lower"
    return (f"LSI vs the integrated embedding: LSI's donor mixing (iLISI {lsi['iLISI']:.3f}) is {order} than the "
            f"integrated embedding's ({cor['iLISI']:.3f}), but LSI also separates cell types poorly (ARI "
            f"{lsi['ARI']:.3f}, cell-type ASW {lsi['celltype_ASW']:.3f} vs {cor['ARI']:.3f} and "
            f"{cor['celltype_ASW']:.3f}): neighbourhoods that mix cell types mix donors too. Mixing scores mean "
            "something only beside the label-conservation scores.")


def _shown(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return table[[c for c in cols if c in table]].rename(columns=COLUMN_NAMES).rename_axis("method")


def _summary(r: Report, t_hem, facts: dict) -> None:
    body = r.section("Summary")
    mode = ("quick (reduced CI mode: a few training steps, so the numbers are not meaningful)" if facts["quick"]
            else "full")
    r.text(body, f"Mode: {mode}. Seed {facts['settings']['seed']}. Total {facts['timings_s']['total']:.0f} s on CPU. "
                 f"Spectral baseline: {facts['spectral_implementation']}.")
    r.table(body, targets(t_hem), caption="Quality targets (hemato)")
    r.text(body, "Two comparisons that can look contradictory (their order changes between runs and seeds):")
    r.text(body, head_vs_knn(t_hem, facts["query_class_sizes"]))
    r.text(body, lsi_mixing(t_hem))


def _guide(r: Report) -> None:
    body = r.section("How to read this report")
    r.text(body, "Every embedding is scored the same way: a 15-nearest-neighbour graph, Leiden clustering with its "
                 "resolution tuned until there are as many clusters as cell types, then the metrics below. All lie "
                 "in [0, 1] (ARI can dip below 0) and higher is better (↑ in the tables).")
    r.items(body, METRICS)
    r.text(body, "The methods compared (all on the same hg19 5 kb bins):")
    r.items(body, BASELINES)


def _data_and_pretraining(r: Report, out: Path, facts: dict, figs: dict) -> None:
    body = r.section("Data and QC")
    r.text(body, f"PBSmall: {facts['n_cells']['pbsmall']} cells from the shipped ArchR fragments (hg19, chr5+chr11); "
                 f"hemato: {facts['n_cells']['hemato']} cells from the shipped 10x peak matrix re-binned to 5 kb bins. "
                 "Both use the same genome-wide hg19 5 kb bins. Each curve is one group's distribution (area 1), so "
                 "a small group is as visible as a large one.")
    for p in figs["qc"]:
        r.image(body, p, root=out, alt=p.stem)
    body = r.section("Pretraining")
    s = facts["settings"]["pretrain"]
    weight = "balanced from the data" if s["state_class_weights"] == "auto" else s["state_class_weights"]
    r.text(body, f"{s['preset']} preset, {s['trainer']['max_steps']} steps of {s['data']['batch_size']} cells "
                 f"(one dataset per batch), lr {s['optimizer']['lr'] or 'of the preset'}; decoder over "
                 f"{s['model'].get('decoder_bins', 'all')} bins, state weights {weight}; contrastive weight "
                 f"{s['model'].get('contrastive_weight', 0)} ({s['contrastive_neighbors']} neighbours), E1 init "
                 f"{s['e1_init']}; labels withheld (self-supervised only).")
    if figs["curves"].get("pretraining"):
        r.image(body, figs["curves"]["pretraining"], root=out, alt="pretraining curve")


def _results(r: Report, out: Path, t_hem, t_pbs, facts: dict, figs: dict) -> None:
    body = r.section("Clustering")
    r.text(body, "Leiden on a 15-NN graph; the resolution is bisected so every method has as many clusters as labels.")
    r.table(body, _shown(t_hem.loc[["atacformer", "LSI", "spectral"]], _CLUSTER_COLS),
            caption="hemato (600 cells, 6 types)")
    r.table(body, _shown(t_pbs, _CLUSTER_COLS), caption="PBSmall (150 cells, 3 types)")
    for name, p in {**figs["umap_hemato"], **{f"PBSmall {k}": v for k, v in figs["umap_pbsmall"].items()}}.items():
        r.image(body, p, root=out, alt=f"UMAP {name}")
    body = r.section("Annotation")
    r.text(body, f"A cell-type head fine-tuned on donor BMMC_D6T1 predicts donor BMMC_D5T1: macro-F1 "
                 f"{facts['annotation_macro_F1']:.3f}. The other rows transfer labels by a kNN vote (15 neighbours) "
                 "among the reference donor's cells in each embedding.")
    r.text(body, head_vs_knn(t_hem, facts["query_class_sizes"]), note=True)
    r.table(body, _shown(t_hem[["transfer_macro_F1"]].dropna(), ["transfer_macro_F1"]), caption="held-out donor")
    r.image(body, figs["confusion"], root=out, alt="confusion matrix")
    r.image(body, figs["curves"]["fine-tuning"], root=out, alt="fine-tuning curve")
    body = r.section("Integration")
    r.text(body, "Adversarial fine-tuning (batch discriminator behind gradient reversal on <cls>, masked-bin "
                 "and MNN-view contrastive objectives kept) across the two hemato donors, then the label-free MNN "
                 "correction of the fine-tuned embedding toward the larger donor ('atacformer integrated'); "
                 "'atacformer adversarial only' is the fine-tuned model's output before that correction.")
    r.text(body, lsi_mixing(t_hem), note=True)
    r.table(body, _shown(t_hem.drop(index="atacformer fine-tuned head", errors="ignore"), _BATCH_COLS),
            caption="batch mixing and label conservation")
    r.image(body, figs["curves"]["integration"], root=out, alt="integration curve")


CRAFT_TABLES = {"alignment": "Alignment of the held-out cells' RNA and ATAC (FOSCTTM ↓: share of cells closer than "
                             "the true partner, random 0.5; top-k ↑: true partner among the k nearest)",
                "imputation": "RNA imputed from ATAC on the held-out libraries (Pearson ↑ with the measured "
                              "log-normalised expression, per gene and per cell)",
                "labels": "Cell types carried from the RNA of the training libraries to the ATAC of the held-out "
                          "ones (accuracy ↑, macro-F1 ↑)"}


def _craft(r: Report, out: Path, craft: dict) -> None:
    body = r.section("CRAFT: RNA + ATAC")
    info = craft["info"]
    r.text(body, f"CRAFT (contrastive RNA–ATAC fine-tuning) on the shipped SNARE-seq adult mouse cortex (RNA and ATAC "
                 f"of the same nuclei, mm10): trained on {info['n_train']} paired cells of six libraries, scored on "
                 f"{info['n_test']} cells of two libraries it never saw, over {info['n_genes']} genes. An ATAC "
                 "encoder (tiny, pretrained here on the training cells) and an RNA encoder are pulled together by "
                 "a symmetric InfoNCE loss; a head imputes RNA from the ATAC embedding. Baselines are fitted on the "
                 "same training cells: CCA between ATAC LSI and RNA PCA, gene-activity scores, kNN and ridge "
                 "imputation. A demo-sized run: the full protocol is benchmarks/craft.py (README, CRAFT).")
    for name, caption in CRAFT_TABLES.items():
        r.table(body, craft["tables"][name].rename_axis("method"), caption=caption)
    r.image(body, craft["figures"]["joint_umap"], root=out, alt="joint UMAP of RNA and ATAC")
    r.image(body, craft["figures"]["markers"], root=out, alt="imputed vs measured marker genes")


def _outputs(r: Report, out: Path, cells: list[Path]) -> None:
    body = r.section("Output files")
    files = {", ".join(p.name for p in cells): "cells × bins with the labels (obs cell_type; hemato also donor and "
             "atacformer_label, the fine-tuned head's prediction for the query donor), every embedding (obsm "
             "X_atacformer, X_lsi, X_spectral, …), Leiden clusters per method (obs leiden_<method>), their UMAPs "
             "(obsm X_umap_<method>) and, under scanpy's keys, the atacformer kNN graph (obsp connectivities/"
             "distances, uns neighbors), obs leiden and obsm X_umap."}
    files.update({"metrics.json, metrics_*.md": "the tables of this report (metrics_craft.md: CRAFT's)",
                  "model/": "the pretrained model "
                  "(Atacformer.from_pretrained)", "figures/": "every figure as PNG"})
    r.items(body, files)
    r.text(body, f"In Python: import anndata, scanpy as sc; adata = anndata.read_h5ad('{out / 'hemato.h5ad'}'); "
                 "sc.pl.umap(adata, color=['cell_type', 'leiden'])")


def build_report(out: Path, *, t_hem, t_pbs, facts: dict, figs: dict, cells: list[Path],
                 craft: dict | None = None) -> Path:
    """Write ``out/report.html`` from the demo's tables, facts (settings, timings, sizes), figures and the
    CRAFT section's output (:func:`atacformer.demo.craft.craft_section`, None = no CRAFT section); returns its
    path."""
    r = Report("atacformer demo report")
    _summary(r, t_hem, facts)
    _guide(r)
    _data_and_pretraining(r, out, facts, figs)
    _results(r, out, t_hem, t_pbs, facts, figs)
    if craft is not None:
        _craft(r, out, craft)
    _outputs(r, out, cells)
    body = r.section("Timings")
    r.table(body, pd.DataFrame({"seconds": facts["timings_s"]}).rename_axis("step"), digits=1)
    return r.write(out / "report.html")
