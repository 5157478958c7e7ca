"""The demo's ``report.html``: summary against the quality targets, data/QC, pretraining, clustering,
annotation, integration and timings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..pl.report import Report

SECTIONS = ("Summary", "Data and QC", "Pretraining", "Clustering", "Annotation", "Integration", "Timings")
_CLUSTER_COLS = ["ARI", "NMI", "kNN_acc", "celltype_ASW", "n_clusters", "resolution"]
_BATCH_COLS = ["iLISI", "kBET", "batch_ASW", "celltype_ASW", "graph_conn", "transfer_macro_F1"]


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


def build_report(out: Path, *, t_hem, t_pbs, facts: dict, u_hem: dict, u_pbs: dict, conf: Path, curves: dict,
                 qc: list[Path]) -> Path:
    r = Report("atacformer demo report")
    body = r.section("Summary")
    mode = "quick (reduced CI mode: numbers are not meaningful)" if facts["quick"] else "full"
    r.text(body, f"Mode: {mode}. Seed {facts['settings']['seed']}. Total {facts['timings_s']['total']:.0f} s on CPU. "
                 f"Spectral baseline: {facts['spectral_implementation']}.")
    r.table(body, targets(t_hem), caption="Quality targets (hemato)")
    body = r.section("Data and QC")
    r.text(body, f"PBSmall: {facts['n_cells']['pbsmall']} cells from the shipped ArchR fragments (hg19, chr5+chr11); "
                 f"hemato: {facts['n_cells']['hemato']} cells from the shipped 10x peak matrix re-binned to 5 kb bins. "
                 "Both use the same genome-wide hg19 5 kb bins.")
    for p in qc:
        r.image(body, p, root=out, alt=p.stem)
    body = r.section("Pretraining")
    s = facts["settings"]["pretrain"]
    weight = "balanced from the data" if s["state_class_weights"] == "auto" else s["state_class_weights"]
    r.text(body, f"{s['preset']} preset, {s['trainer']['max_steps']} steps of {s['data']['batch_size']} cells "
                 f"(one dataset per batch), lr {s['optimizer']['lr'] or 'of the preset'}; decoder over "
                 f"{s['model'].get('decoder_bins', 'all')} bins, state weights {weight}; "
                 f"contrastive weight {s['model'].get('contrastive_weight', 0)} ({s['contrastive_neighbors']} "
                 f"neighbours), E1 init {s['e1_init']}; labels withheld (self-supervised only).")
    if curves.get("pretraining"):
        r.image(body, curves["pretraining"], root=out, alt="pretraining curve")
    body = r.section("Clustering")
    r.text(body, "Leiden on a 15-NN graph; the resolution is bisected so every method has as many clusters as labels.")
    r.table(body, t_hem.loc[["atacformer", "LSI", "spectral"], _CLUSTER_COLS], caption="hemato (600 cells, 6 types)")
    r.table(body, t_pbs[_CLUSTER_COLS], caption="PBSmall (150 cells, 3 types)")
    for name, p in {**u_hem, **{f"PBSmall {k}": v for k, v in u_pbs.items()}}.items():
        r.image(body, p, root=out, alt=f"UMAP {name}")
    body = r.section("Annotation")
    r.text(body, f"A cell-type head fine-tuned on donor BMMC_D6T1 predicts donor BMMC_D5T1: macro-F1 "
                 f"{facts['annotation_macro_F1']:.3f}. Baselines: kNN (k=15) transfer on their embeddings.")
    r.table(body, t_hem[["transfer_macro_F1"]].dropna(), caption="held-out donor macro-F1")
    r.image(body, conf, root=out, alt="confusion matrix")
    r.image(body, curves["fine-tuning"], root=out, alt="fine-tuning curve")
    body = r.section("Integration")
    r.text(body, "Adversarial fine-tuning (batch discriminator behind gradient reversal on <cls>, masked-bin "
                 "and MNN-view contrastive objectives kept) across the two hemato donors, then the label-free MNN "
                 "correction of the fine-tuned embedding toward the larger donor ('atacformer integrated'); "
                 "'atacformer adversarial only' is the fine-tuned model's output before that correction.")
    r.table(body, t_hem[[c for c in _BATCH_COLS if c in t_hem]], caption="batch mixing and label conservation")
    r.image(body, curves["integration"], root=out, alt="integration curve")
    body = r.section("Timings")
    r.table(body, pd.DataFrame({"seconds": facts["timings_s"]}))
    return r.write(out / "report.html")
