"""``atacformer demo``: the whole workflow on the shipped data, CPU only, no network, one report.

Steps: ingest PBSmall fragments and the hemato 10x peak matrix (re-binned to 5 kb, hg19) → pretrain
the ``tiny`` preset on both, without labels → embed → Leiden with as many clusters as labels, scored
against the labels beside TF-IDF+LSI and spectral baselines on the same bins → fine-tune cell-type
annotation on one hemato donor and predict the other → adversarial batch correction across the two
donors (+ MNN correction) → ``report.html`` + ``metrics.json``/``metrics.md`` with UMAPs, tables, curves and timings.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anndata as ad
import lightning as L
import pandas as pd
import torch

from .. import pl
from ..genome import data_path
from ..metrics import lsi, macro_f1, spectral
from ..metrics.evaluate import evaluate, write_results, write_text
from ..models import Atacformer
from ..train import FinetuneRecipe, IntegrateRecipe, PretrainRecipe
from .annotate import annotate, finetune
from .cluster import umap
from .integrate import integrate

log = logging.getLogger(__name__)
REFERENCE_DONOR, QUERY_DONOR = "BMMC_D6T1", "BMMC_D5T1"


@dataclass
class DemoSettings:
    """The demo's budget: the pretraining recipe (:meth:`PretrainRecipe.demo`), epochs of the
    fine-tuning and integration recipes; :meth:`quick` is the reduced CI mode."""

    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe.demo)
    finetune_epochs: int = 40
    integrate_epochs: int = 6
    umap_epochs: int | None = None
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> DemoSettings:
        recipe = PretrainRecipe.demo(seed).replace(trainer={"max_steps": 3})
        return cls(pretrain=recipe, finetune_epochs=1, integrate_epochs=1, umap_epochs=50, seed=seed)


class _Timer(dict):
    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        log.info("demo: %s …", name)
        yield
        self[name] = time.perf_counter() - t


def load_data() -> tuple[ad.AnnData, ad.AnnData]:
    """(PBSmall cells × 5 kb bins from fragments, hemato cells × 5 kb bins from the 10x peak matrix), hg19."""
    from ..io import read_fragments, read_region_matrix

    pbs = read_fragments(data_path("pbsmall_fragments_hg19.tsv.gz"), genome="hg19", bin_size=5000,
                         labels=data_path("pbsmall_labels.tsv"), min_fragments=1)
    hem = read_region_matrix(data_path("hemato_10x_hg19.h5ad"), genome="hg19", bin_size=5000)
    return pbs, hem


def _embed(adata: ad.AnnData, model: Atacformer, key: str) -> None:
    from .embed import embed  # the public tl.embed (training area)

    embed(adata, model, key_added=key, progress=False)


def pretrain_model(pbs: ad.AnnData, hem: ad.AnnData, out: Path, s: DemoSettings) -> tuple[Atacformer, Path | None]:
    """Pretrain the tiny preset on both datasets with their labels removed (self-supervised only)."""
    from ..train import pretrain

    cells = ad.concat({"pbsmall": _unlabelled(pbs), "hemato": _unlabelled(hem)}, label="dataset", merge="same",
                      uns_merge="first", index_unique="-")
    model = pretrain(cells, out_dir=out / "model", recipe=s.pretrain.replace(seed=s.seed), overwrite=True)
    logs = sorted((out / "model").rglob("metrics.csv"))
    return model.eval(), (logs[-1] if logs else None)


def _unlabelled(adata: ad.AnnData) -> ad.AnnData:
    return ad.AnnData(adata.X, obs=pd.DataFrame(index=adata.obs_names.copy()), var=adata.var[[]].copy(),
                      uns={k: adata.uns[k] for k in ("genome", "bin_size", "chrom_sizes")})


def _umaps(adata: ad.AnnData, reps: dict[str, str], colors: list[str], figdir: Path, prefix: str, s: DemoSettings) -> dict:
    paths = {}
    for name, rep in reps.items():
        umap(adata, use_rep=rep, n_epochs=s.umap_epochs, seed=s.seed, key_added=f"X_umap_{name}")
        cols = [*colors, f"leiden_{name}"]
        paths[name] = pl.umap(adata, color=cols, basis=f"X_umap_{name}",
                              title=name, path=figdir / f"{prefix}_umap_{name}.png")
    return paths


def run_demo(outdir: str | Path, *, quick: bool = False, seed: int = 0, settings: DemoSettings | None = None) -> Path:
    """Run the demo into ``outdir`` and return the path of ``report.html`` (``settings`` overrides the
    budget of the full/quick mode)."""
    s = settings or (DemoSettings.quick(seed) if quick else DemoSettings(seed=seed))
    out = Path(outdir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, verbose=False)
    timer, t0 = _Timer(), time.perf_counter()

    with timer("ingest"):
        pbs, hem = load_data()
    pl.qc(pbs, path=figs / "qc_pbsmall.png", groupby="cell_type")
    pl.qc(hem, path=figs / "qc_hemato.png", groupby="donor")
    with timer("pretrain"):
        model, curve_csv = pretrain_model(pbs, hem, out, s)
    with timer("embed"):
        for a in (pbs, hem):
            _embed(a, model, "X_atacformer")
    with timer("baselines"):
        for a in (pbs, hem):
            lsi(a, seed=seed)
            spectral(a, seed=seed)
    reps = {"atacformer": "X_atacformer", "LSI": "X_lsi", "spectral": "X_spectral"}
    with timer("evaluate"):
        t_pbs = evaluate(pbs, reps=reps, labels_key="cell_type", seed=seed)
        t_hem = evaluate(hem, reps=reps, labels_key="cell_type", batch_key="donor", reference_batch=REFERENCE_DONOR,
                         seed=seed)

    with timer("annotate"):
        ref, query = hem[hem.obs["donor"] == REFERENCE_DONOR].copy(), hem[hem.obs["donor"] == QUERY_DONOR].copy()
        tuned = finetune(ref, model, labels_key="cell_type", recipe=FinetuneRecipe(epochs=s.finetune_epochs, seed=seed))
        annotate(query, tuned, threshold=0.0)
        f1 = macro_f1(query.obs["cell_type"], query.obs["atacformer_label"])
        t_hem.loc["atacformer fine-tuned head", "transfer_macro_F1"] = f1
    with timer("integrate"):
        integrate(hem, model, batch_key="donor", recipe=IntegrateRecipe(epochs=s.integrate_epochs, seed=seed),
                  key_added="X_atacformer_integrated")
        t_int = evaluate(hem, reps={"atacformer integrated": "X_atacformer_integrated",
                                    "atacformer adversarial only": "X_atacformer_integrated_model"}, labels_key="cell_type",
                         batch_key="donor", reference_batch=REFERENCE_DONOR, seed=seed, key_added="integrated_eval")
        t_hem = pd.concat([t_hem, t_int])

    with timer("plots"):
        u_hem = _umaps(hem, {**reps, "atacformer integrated": "X_atacformer_integrated"}, ["cell_type", "donor"],
                       figs, "hemato", s)
        u_pbs = _umaps(pbs, reps, ["cell_type"], figs, "pbsmall", s)
        conf = pl.confusion(query.obs["cell_type"], query.obs["atacformer_label"], path=figs / "annotation_confusion.png",
                            title=f"{QUERY_DONOR} predicted by a head fine-tuned on {REFERENCE_DONOR}")
        curves = {"pretraining": pl.training_curves(curve_csv, path=figs / "curve_pretrain.png", title="pretraining")
                  if curve_csv else None,
                  "fine-tuning": pl.training_curves(ref.uns["atacformer_finetune"]["history"],
                                                    path=figs / "curve_finetune.png", x="epoch", title="fine-tuning"),
                  "integration": pl.training_curves(hem.uns["X_atacformer_integrated"]["history"],
                                                    path=figs / "curve_integrate.png", x="epoch", title="integration")}
    timer["total"] = time.perf_counter() - t0
    facts = {"settings": asdict(s), "quick": quick, "timings_s": dict(timer), "spectral_implementation":
             hem.uns["X_spectral"]["implementation"], "annotation_macro_F1": f1,
             "n_cells": {"pbsmall": pbs.n_obs, "hemato": hem.n_obs}, "torch": torch.__version__}
    write_results(t_hem, out, name="metrics_hemato", extra=facts)
    write_results(t_pbs, out, name="metrics_pbsmall")
    write_text(out / "metrics.json", json.dumps({"hemato": json.loads((out / "metrics_hemato.json").read_text()),
                                                 "pbsmall": json.loads((out / "metrics_pbsmall.json").read_text())},
                                                indent=2))
    from .demo_report import build_report

    return build_report(out, t_hem=t_hem, t_pbs=t_pbs, facts=facts, u_hem=u_hem, u_pbs=u_pbs, conf=conf,
                        curves=curves, qc=[figs / "qc_pbsmall.png", figs / "qc_hemato.png"])
