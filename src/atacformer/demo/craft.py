"""The demo's CRAFT section: a subset of paired cells split by library → CRAFT beside its baselines,
a joint UMAP of both modalities, imputed vs measured marker genes, the three metric tables.

>>> from atacformer.datasets import snareseq                                         # doctest: +SKIP
>>> section = craft_section(*snareseq(), "demo_out/craft")                           # doctest: +SKIP
>>> section["figures"], section["tables"]["alignment"]                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .. import pl
from .._atomic import atomic_path
from ..tl import umap
from ..tl.craft_eval import PairedSplit, baselines, train_and_score
from ..train import pretrain
from ..train.craft import CraftRecipe

log = logging.getLogger(__name__)
MARKERS = ("Slc17a7", "Gad1", "Mbp", "Gja1")  # excitatory, inhibitory neurons, oligodendrocytes, astrocytes


def _demo_recipe() -> CraftRecipe:
    return CraftRecipe().replace(batch_size=128, optimizer={"warmup_steps": 10},
                                 trainer={"max_steps": 120, "ckpt_every_n_steps": None, "log_every_n_steps": 10},
                                 pretrain={"trainer": {"max_steps": 30, "log_every_n_steps": 10},
                                           "data": {"batch_size": 32, "batch_key": "batch"}})


@dataclass
class CraftDemoSettings:
    """Budget of the CRAFT section: cells drawn per split, the recipe (its ``pretrain`` recipe trains the
    ATAC encoder when none is given), marker genes shown, UMAP epochs."""

    n_train: int = 900
    n_test: int = 300
    test_libraries: tuple[str, ...] = ("09G", "09H")
    library_key: str = "batch"
    labels_key: str = "cell_type_coarse"
    recipe: CraftRecipe = field(default_factory=_demo_recipe)
    markers: tuple[str, ...] = MARKERS
    umap_epochs: int | None = 200
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> CraftDemoSettings:
        recipe = _demo_recipe().replace(trainer={"max_steps": 3}, pretrain={"trainer": {"max_steps": 2}})
        return cls(n_train=200, n_test=100, recipe=recipe, umap_epochs=50, seed=seed)


def _subset(atac: ad.AnnData, rna: ad.AnnData, st: CraftDemoSettings) -> PairedSplit:
    """Random ``n_train`` cells of the training libraries and ``n_test`` of the held-out ones, paired."""
    common = atac.obs_names[atac.obs_names.isin(rna.obs_names)]
    atac, rna = atac[common], rna[common]
    test = atac.obs[st.library_key].astype(str).isin(st.test_libraries).to_numpy()
    rng = np.random.default_rng(st.seed)
    pick = np.sort(np.r_[rng.permutation(np.flatnonzero(~test))[: st.n_train],
                         rng.permutation(np.flatnonzero(test))[: st.n_test]])
    return PairedSplit(atac[pick].copy(), rna[pick].copy(), test[pick])


def joint_umap(outputs: dict, *, labels_key: str, path: Path, n_epochs: int | None, seed: int) -> Path:
    """UMAP of the held-out cells' ATAC and RNA joint embeddings together, by modality and cell type."""
    a, r = outputs["atac"], outputs["rna"]
    obs = pd.concat([a.obs.assign(modality="ATAC"), r.obs.assign(modality="RNA")])
    obs.index = [f"{m}:{n}" for m, n in zip(obs["modality"], obs.index, strict=False)]
    joint = ad.AnnData(obs=obs, obsm={"X_craft": np.vstack([a.obsm["X_craft"], r.obsm["X_craft"]])})
    umap(joint, use_rep="X_craft", n_epochs=n_epochs, seed=seed)
    outputs["joint"] = joint
    pl.umap(joint, color=["modality", labels_key], suptitle="CRAFT joint space (held-out libraries)", save=path,
            show=False)
    return path


def marker_figure(outputs: dict, measured: np.ndarray, genes, markers, *, path: Path) -> Path:
    """Per marker gene: imputed vs measured scatter, and the measured and imputed values on the RNA cells' UMAP."""
    import matplotlib.pyplot as plt  # pl has set the Agg backend

    genes = list(genes)
    markers = [m for m in markers if m in genes]
    xy = outputs["joint"].obsm["X_umap"][outputs["atac"].n_obs:]  # the RNA cells' coordinates
    fig, axes = plt.subplots(len(markers), 3, figsize=(11, 3.2 * len(markers)), squeeze=False)
    for row, gene in zip(axes, markers, strict=False):
        j = genes.index(gene)
        imp, true = outputs["imputed"][:, j], measured[:, j]
        r = np.corrcoef(imp, true)[0, 1] if imp.std() > 0 and true.std() > 0 else float("nan")
        row[0].scatter(true, imp, s=4, alpha=0.5, linewidths=0)
        row[0].set(xlabel="measured (log-normalised)", ylabel="imputed from ATAC", title=f"{gene}  r = {r:.2f}")
        for ax, values, what in ((row[1], true, "measured"), (row[2], imp, "imputed")):
            ax.scatter(xy[:, 0], xy[:, 1], c=values, s=4, cmap="viridis", linewidths=0)
            ax.set(title=f"{gene} {what}", xticks=[], yticks=[])
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """PNG written atomically (``pl`` keeps its own writer private)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)


def craft_section(atac: ad.AnnData, rna: ad.AnnData, out_dir: str | Path, *, model=None,
                  settings: CraftDemoSettings | None = None) -> dict:
    """Run the CRAFT part of the demo.

    Parameters
    ----------
    atac, rna
        Paired cells (matched by ``obs_names``): ATAC cells × bins, RNA cells × genes raw counts, with
        ``obs[settings.library_key]`` and ``obs[settings.labels_key]`` (the shipped SNARE-seq cortex).
    out_dir
        Folder for the figures.
    model
        ATAC encoder (an Atacformer of the data's genome or its directory); None = pretrained on the
        training cells with ``settings.recipe.pretrain``.
    settings
        :class:`CraftDemoSettings` (``CraftDemoSettings.quick()`` for CI).

    Returns
    -------
    ``{"figures": {"joint_umap", "markers"}: PNG paths, "tables": {"alignment", "imputation", "labels"}:
    DataFrames (CRAFT beside the baselines), "info": cells, genes and timings}``.
    """
    st = settings or CraftDemoSettings()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    s = _subset(atac, rna, st)
    tables = baselines(s, genome=str(atac.uns.get("genome", "mm10")))
    t1 = time.perf_counter()
    if model is None:
        model = pretrain(s.atac[s.train], out_dir=out_dir / "atac_pretrain", overwrite=True,
                         recipe=dataclasses.replace(st.recipe.pretrain, seed=st.seed))
    _, rows, outputs = train_and_score(s, model=model, recipe=dataclasses.replace(st.recipe, seed=st.seed))
    tables.extend(rows)
    t2 = time.perf_counter()
    figures = {"joint_umap": joint_umap(outputs, labels_key=st.labels_key, path=out_dir / "craft_joint_umap.png",
                                        n_epochs=st.umap_epochs, seed=st.seed)}
    figures["markers"] = marker_figure(outputs, s.Y[s.test], s.rna.var_names, st.markers,
                                       path=out_dir / "craft_markers.png")
    tables.info.update(n_train=int(s.train.sum()), n_test=int(s.test.sum()), n_genes=s.rna.n_vars,
                       seconds={"baselines": round(t1 - t0, 1), "craft": round(t2 - t1, 1),
                                "figures": round(time.perf_counter() - t2, 1)})
    log.info("CRAFT section: %s", tables.info)
    return {"figures": figures, "tables": tables.frames(), "info": tables.info}
