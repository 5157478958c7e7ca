"""The demo's figures: QC, a UMAP per embedding and dataset, the annotation confusion matrix and the three
training curves, all PNG under ``figures/``."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from .. import pl
from ..tl import umap

#: dataset names as the report prints them
DATASETS = {"pbsmall": "PBSmall", "hemato": "hemato"}


def slug(name: str) -> str:
    """A method name as a file / obsm key fragment (``"atacformer integrated"`` → ``"atacformer_integrated"``)."""
    return name.replace(" ", "_")


def umaps(adata: ad.AnnData, reps: dict[str, str], colors: list[str], figdir: Path, dataset: str, *, n_epochs,
          seed: int) -> dict[str, Path]:
    """UMAP of each embedding into ``obsm['X_umap_<method>']``, drawn coloured by ``colors`` and by the
    method's Leiden clusters; ``{method: png}``."""
    paths = {}
    for name, rep in reps.items():
        key = f"X_umap_{slug(name)}"
        umap(adata, use_rep=rep, n_epochs=n_epochs, seed=seed, key_added=key)
        cols = [*colors, f"leiden_{name}"]
        titles = [pl.label(c) for c in colors] + [f"Leiden clusters ({adata.obs[cols[-1]].nunique()})"]
        path = figdir / f"{dataset}_umap_{slug(name)}.png"
        pl.umap(adata, color=cols, basis=key, title=titles, suptitle=f"{DATASETS[dataset]}: {name} embedding",
                show=False, save=path)
        paths[name] = path
    return paths


def curves(figdir: Path, *, curve_csv: Path | None, finetune_history, integrate_history) -> dict[str, Path | None]:
    """The pretraining, fine-tuning and integration curves; ``{name: png}`` (None without a pretraining log)."""
    out = {"pretraining": None}
    if curve_csv is not None:
        out["pretraining"] = figdir / "curve_pretrain.png"
        pl.training_curves(curve_csv, title="pretraining (self-supervised, both datasets)", show=False,
                           save=out["pretraining"])
    out["fine-tuning"] = figdir / "curve_finetune.png"
    pl.training_curves(finetune_history, x="epoch", ncols=3, title="fine-tuning the cell-type head", show=False,
                       save=out["fine-tuning"])
    out["integration"] = figdir / "curve_integrate.png"
    pl.training_curves(integrate_history, x="epoch", ncols=3, title="integration (adversarial fine-tune)",
                       show=False, save=out["integration"])
    return out


def make_figures(figdir: Path, *, pbs: ad.AnnData, hem: ad.AnnData, ref: ad.AnnData, query: ad.AnnData,
                 curve_csv: Path | None, s, reference: str, query_donor: str) -> dict:
    """Every figure of the report; ``{"qc": [png], "umap_hemato": {method: png}, "umap_pbsmall": …,
    "confusion": png, "curves": {name: png}}``."""
    figdir.mkdir(parents=True, exist_ok=True)
    qc = [figdir / "qc_pbsmall.png", figdir / "qc_hemato.png"]
    pl.qc(pbs, groupby="cell_type", title="PBSmall", show=False, save=qc[0])
    pl.qc(hem, groupby="donor", title="hemato", show=False, save=qc[1])
    reps = {"atacformer": "X_atacformer", "LSI": "X_lsi", "spectral": "X_spectral"}
    u_hem = umaps(hem, {**reps, "atacformer integrated": "X_atacformer_integrated"}, ["cell_type", "donor"], figdir,
                  "hemato", n_epochs=s.umap_epochs, seed=s.seed)
    u_pbs = umaps(pbs, reps, ["cell_type"], figdir, "pbsmall", n_epochs=s.umap_epochs, seed=s.seed)
    conf = figdir / "annotation_confusion.png"
    pl.confusion(query.obs["cell_type"], query.obs["atacformer_label"], show=False, save=conf,
                 title=f"{query_donor} predicted by a head fine-tuned on {reference}")
    figs = curves(figdir, curve_csv=curve_csv, finetune_history=ref.uns["atacformer_finetune"]["history"],
                  integrate_history=hem.uns["X_atacformer_integrated"]["history"])
    return {"qc": qc, "umap_hemato": u_hem, "umap_pbsmall": u_pbs, "confusion": conf, "curves": figs}
