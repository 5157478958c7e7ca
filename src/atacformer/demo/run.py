"""``atacformer demo``: the whole workflow on the shipped data, CPU only, no network, one report.

Steps: ingest PBSmall fragments and the hemato 10x peak matrix (re-binned to 5 kb, hg19) → pretrain
the ``tiny`` preset on both, without labels → embed → Leiden with as many clusters as labels, scored
against the labels beside TF-IDF+LSI and spectral baselines on the same bins → fine-tune cell-type
annotation on one hemato donor and predict the other → adversarial batch correction across the two
donors (+ MNN correction) → ``report.html`` + ``metrics.json``/``metrics_*.md`` with UMAPs, tables, curves and
timings, and the annotated cells as ``hemato.h5ad`` / ``pbsmall.h5ad`` for scanpy.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anndata as ad
import lightning as L
import pandas as pd
import torch

from .._atomic import write_text
from ..genome import data_path
from ..io import write_h5ad
from ..metrics import macro_f1, to_markdown
from ..models import Atacformer
from ..tl import (
    annotate,
    cluster,
    embed,
    evaluate,
    finetune,
    integrate,
    lsi,
    spectral,
    write_evaluation,
)
from ..train import FinetuneRecipe, IntegrateRecipe, PretrainRecipe
from .craft import CraftDemoSettings, craft_section
from .figures import make_figures
from .progress import Steps
from .report import build_report

REFERENCE_DONOR, QUERY_DONOR = "BMMC_D6T1", "BMMC_D5T1"
REPS = {"atacformer": "X_atacformer", "LSI": "X_lsi", "spectral": "X_spectral"}


@dataclass
class DemoSettings:
    """The demo's budget: the pretraining recipe (:meth:`PretrainRecipe.demo`: 400 steps of 32 cells, one
    dataset per batch) and the epochs of the fine-tuning and integration recipes; :meth:`quick` is the
    reduced CI mode."""

    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe.demo)
    finetune_epochs: int = 40
    integrate_epochs: int = 6
    umap_epochs: int | None = None
    craft: CraftDemoSettings | None = field(default_factory=CraftDemoSettings)  # None: no CRAFT section
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        """The reduced CI mode: 3 pretraining steps, 1 fine-tuning and 1 integration epoch, a few CRAFT steps."""
        recipe = PretrainRecipe.demo(seed).replace(trainer={"max_steps": 3})
        return cls(pretrain=recipe, finetune_epochs=1, integrate_epochs=1, umap_epochs=50,
                   craft=CraftDemoSettings.quick(seed), seed=seed)


def load_data() -> tuple[ad.AnnData, ad.AnnData]:
    """The demo's data, shipped in the package, on the genome-wide hg19 5 kb bins.

    Returns
    -------
    ``(pbsmall, hemato)``: PBSmall cells × bins from the ArchR fragments (``obs['cell_type']``) and hemato
    cells × bins from the 10x peak matrix (``obs['cell_type']``, ``obs['donor']``).
    """
    from ..io import read_fragments, read_region_matrix

    pbs = read_fragments(data_path("pbsmall_fragments_hg19.tsv.gz"), genome="hg19", bin_size=5000,
                         labels=data_path("pbsmall_labels.tsv"), min_fragments=1)
    hem = read_region_matrix(data_path("hemato_10x_hg19.h5ad"), genome="hg19", bin_size=5000)
    return pbs, hem


def pretrain_model(pbs: ad.AnnData, hem: ad.AnnData, out: Path, s: DemoSettings) -> tuple[Atacformer, Path | None]:
    """Pretrain the tiny preset on both datasets with their labels removed (self-supervised only).

    Masked-bin 3-state loss over the observed bins plus the contrastive loss on ``<cls>``
    (the recipe's ``model["contrastive_weight"]``); E1 starts from the TF-IDF SVD bin loadings (``e1_init``).

    Parameters
    ----------
    pbs, hem
        The datasets of :func:`load_data`.
    out
        The model goes to ``out / "model"``.
    s
        The budget and recipe.

    Returns
    -------
    ``(model, metrics.csv path or None)``: the pretrained model in eval mode and its training log.
    """
    from ..train import pretrain

    cells = ad.concat({"pbsmall": _unlabelled(pbs), "hemato": _unlabelled(hem)}, label="dataset", merge="same",
                      uns_merge="first", index_unique="-")
    model = pretrain(cells, out_dir=out / "model", recipe=s.pretrain.replace(seed=s.seed), overwrite=True)
    logs = sorted((out / "model").rglob("metrics.csv"))
    return model.eval(), (logs[-1] if logs else None)


def _unlabelled(adata: ad.AnnData) -> ad.AnnData:
    return ad.AnnData(adata.X, obs=pd.DataFrame(index=adata.obs_names.copy()), var=adata.var[[]].copy(),
                      uns={k: adata.uns[k] for k in ("genome", "bin_size", "chrom_sizes")})


def _evaluate(pbs: ad.AnnData, hem: ad.AnnData, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The clustering/label tables of both datasets (clusters kept in ``obs['leiden_<method>']``)."""
    t_pbs = evaluate(pbs, reps=REPS, labels_key="cell_type", seed=seed, clusters_prefix="leiden_")
    t_hem = evaluate(hem, reps=REPS, labels_key="cell_type", batch_key="donor", reference_batch=REFERENCE_DONOR,
                     seed=seed, clusters_prefix="leiden_")
    return t_pbs, t_hem


def _annotate(hem: ad.AnnData, model: Atacformer, s: DemoSettings) -> tuple[ad.AnnData, ad.AnnData, float]:
    """Fine-tune a copy of the model on the reference donor, predict the query donor: (ref, query, macro-F1)."""
    ref, query = hem[hem.obs["donor"] == REFERENCE_DONOR].copy(), hem[hem.obs["donor"] == QUERY_DONOR].copy()
    tuned = finetune(ref, model, labels_key="cell_type", recipe=FinetuneRecipe(epochs=s.finetune_epochs, seed=s.seed))
    annotate(query, tuned, threshold=0.0)
    hem.obs["atacformer_label"] = query.obs["atacformer_label"].astype(str).reindex(hem.obs_names).fillna(
        "(reference donor)").astype("category")
    return ref, query, macro_f1(query.obs["cell_type"], query.obs["atacformer_label"])


def _integrate(hem: ad.AnnData, model: Atacformer, s: DemoSettings) -> pd.DataFrame:
    """Adversarial fine-tune + MNN correction across the donors; their scores (clusters in ``obs``)."""
    integrate(hem, model, batch_key="donor", recipe=IntegrateRecipe(epochs=s.integrate_epochs, seed=s.seed),
              key_added="X_atacformer_integrated")
    reps = {"atacformer integrated": "X_atacformer_integrated",
            "atacformer adversarial only": "X_atacformer_integrated_model"}
    return evaluate(hem, reps=reps, labels_key="cell_type", batch_key="donor", reference_batch=REFERENCE_DONOR,
                    seed=s.seed, key_added="atacformer_evaluation_integrated", clusters_prefix="leiden_")


def write_cells(adata: ad.AnnData, path: Path, *, seed: int) -> Path:
    """The annotated cells for scanpy: the atacformer kNN graph + Leiden under scanpy's keys
    (``obsp['connectivities']``, ``uns['neighbors']``, ``obs['leiden']``), its UMAP as ``obsm['X_umap']``,
    obs column names without spaces; written atomically."""
    adata.obs.columns = [str(c).replace(" ", "_") for c in adata.obs.columns]
    cluster(adata, use_rep="X_atacformer", n_clusters=adata.obs["cell_type"].nunique(), seed=seed)
    adata.obsm["X_umap"] = adata.obsm["X_umap_atacformer"]
    return write_h5ad(adata, path)


def _craft(out: Path, s: DemoSettings, steps: Steps) -> dict:
    """The CRAFT section on the shipped SNARE-seq cortex (paired RNA + ATAC, mm10), as one demo step."""
    from ..datasets import snareseq

    c = s.craft
    with steps("craft", f"CRAFT on {c.n_train + c.n_test} SNARE-seq cortex cells (paired RNA + ATAC): trained on "
                        f"the other libraries, scored on {'+'.join(c.test_libraries)}"):
        atac, rna = snareseq()
        return craft_section(atac, rna, out / "figures", settings=dataclasses.replace(c, seed=s.seed))


def _write_metrics(out: Path, t_hem: pd.DataFrame, t_pbs: pd.DataFrame, facts: dict, craft: dict | None) -> None:
    write_evaluation(t_hem, out, name="metrics_hemato", extra=facts)
    write_evaluation(t_pbs, out, name="metrics_pbsmall")
    both = {name: json.loads((out / f"metrics_{name}.json").read_text()) for name in ("hemato", "pbsmall")}
    if craft is not None:
        both["craft"] = {name: json.loads(t.to_json(orient="index")) for name, t in craft["tables"].items()}
        write_text(out / "metrics_craft.md", "\n\n".join(f"## {name}\n\n{to_markdown(t)}"
                                                           for name, t in craft["tables"].items()) + "\n")
    write_text(out / "metrics.json", json.dumps(both, indent=2))


def _facts(s: DemoSettings, *, quick: bool, timings: dict, hem, pbs, query, f1: float) -> dict:
    """What the report and ``metrics.json`` record about the run besides the metric tables."""
    return {"settings": asdict(s), "quick": quick, "timings_s": {**timings, "total": sum(timings.values())},
            "spectral_implementation": hem.uns["X_spectral"]["implementation"], "annotation_macro_F1": f1,
            "n_cells": {"pbsmall": pbs.n_obs, "hemato": hem.n_obs}, "torch": torch.__version__,
            "query_class_sizes": {str(k): int(v) for k, v in query.obs["cell_type"].value_counts().items()}}


def run_demo(outdir: str | Path, *, quick: bool = False, seed: int = 0, settings: DemoSettings | None = None,
             progress: bool = True) -> Path:
    """Run the demo into ``outdir`` and return the path of ``report.html``.

    Parameters
    ----------
    outdir
        Output folder (created): ``report.html``, ``metrics*.json``/``.md``, ``hemato.h5ad``,
        ``pbsmall.h5ad``, ``figures/`` and the pretrained ``model/``.
    quick
        The reduced CI mode (seconds of training; the numbers are not meaningful).
    seed
        Seed of every step.
    settings
        Overrides the budget of the full/quick mode.
    progress
        Print one line as each step starts and ends (stderr).

    Returns
    -------
    The path of ``report.html``.
    """
    s = settings or (DemoSettings.quick(seed) if quick else DemoSettings(seed=seed))
    out = Path(outdir)
    L.seed_everything(s.seed, verbose=False)
    steps = Steps(9 + (s.craft is not None), progress=progress)
    with steps("ingest", "reading the shipped PBSmall fragments and hemato peak matrix (hg19, 5 kb bins)"):
        pbs, hem = load_data()
    with steps("pretrain", f"pretraining the tiny model on {pbs.n_obs + hem.n_obs} cells without labels "
                           f"({s.pretrain.trainer.max_steps} steps × {s.pretrain.data.batch_size} cells)"):
        model, curve_csv = pretrain_model(pbs, hem, out, s)
    with steps("embed", "embedding every cell with the pretrained model (<cls> vectors)"):
        for a in (pbs, hem):
            embed(a, model, key_added="X_atacformer", progress=sys.stderr.isatty())
    with steps("baselines", "TF-IDF + LSI and spectral embeddings of the same bins"):
        for a in (pbs, hem):
            lsi(a, seed=s.seed)
            spectral(a, seed=s.seed)
    with steps("evaluate", "Leiden at the label count and every metric, for each embedding"):
        t_pbs, t_hem = _evaluate(pbs, hem, s.seed)
    with steps("annotate", f"fine-tuning a cell-type head on {REFERENCE_DONOR}, predicting {QUERY_DONOR} "
                           f"({s.finetune_epochs} epoch{'s' * (s.finetune_epochs != 1)})"):
        ref, query, f1 = _annotate(hem, model, s)
        t_hem.loc["atacformer fine-tuned head", "transfer_macro_F1"] = f1
    with steps("integrate", f"adversarial fine-tune across the donors ({s.integrate_epochs} "
                            f"epoch{'s' * (s.integrate_epochs != 1)}) "
                            "+ MNN correction"):
        t_hem = pd.concat([t_hem, _integrate(hem, model, s)])
    craft = _craft(out, s, steps) if s.craft is not None else None
    with steps("figures", "UMAPs, QC, confusion matrix and training curves"):
        figs = make_figures(out / "figures", pbs=pbs, hem=hem, ref=ref, query=query, curve_csv=curve_csv, s=s,
                            reference=REFERENCE_DONOR, query_donor=QUERY_DONOR)
    with steps("write", "metrics, annotated cells (.h5ad) and report"):
        facts = _facts(s, quick=quick, timings=dict(steps), hem=hem, pbs=pbs, query=query, f1=f1)
        _write_metrics(out, t_hem, t_pbs, facts, craft)
        cells = [write_cells(a, out / f"{name}.h5ad", seed=s.seed) for name, a in (("hemato", hem), ("pbsmall", pbs))]
        report = build_report(out, t_hem=t_hem, t_pbs=t_pbs, facts=facts, figs=figs, cells=cells, craft=craft)
    return report
