"""CRAFT tools (scanpy contract): train a joint RNA–ATAC model, embed either modality into the joint
space, impute RNA from ATAC, carry scRNA labels to scATAC cells.

>>> craft = craft_train(atac, rna)                      # paired cells (same obs_names)     # doctest: +SKIP
>>> craft_embed(atac_query, craft, modality="atac")     # obsm['X_craft']                   # doctest: +SKIP
>>> expr = impute_rna(atac_query, craft)                # cells × CRAFT genes AnnData       # doctest: +SKIP
>>> transfer_labels(atac_query, rna_ref, craft, labels_key="cell_type")  # obs['craft_label'] # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..io.regions import read_region_matrix
from ..models import Atacformer
from ..models.craft import CraftModel
from ..models.rna import GeneVocab
from ..train import pretrain
from ..train.batcher import adata_cells, inference_batches
from ..train.craft import CraftRecipe, fit_craft
from .annotate import knn_probs, label_codes

log = logging.getLogger(__name__)
MODALITIES = ("atac", "rna")
PRETRAIN_DIR = "atac_pretrain"


# ------------------------------------------------------------------------------------------ inputs
def load_craft(craft: CraftModel | str | Path) -> CraftModel:
    """A :class:`CraftModel`, or one loaded from a directory written by ``save_pretrained``."""
    if isinstance(craft, CraftModel):
        return craft
    return CraftModel.from_pretrained(craft)


def atac_bins(adata: ad.AnnData, atac: Atacformer, *, what: str = "ATAC data") -> ad.AnnData:
    """``adata`` as cells × the ATAC model's bins: as it is when it was ingested (``uns`` genome and bin
    size, checked against the model: a clear error on a mismatch), else re-binned from its regions
    (peaks: var chrom/start/end or names like ``chr1:100-600``) as ``atacformer ingest`` does."""
    uns = adata.uns
    if "bin_size" in uns and "genome" in uns:
        atac.check_data(uns, what=what)
        return adata
    genome = uns.get("genome")
    if genome is not None and str(genome) != atac.config.genome:
        raise ValueError(f"{what}: genome {genome!r} differs from the ATAC model's {atac.config.genome!r}")
    log.info("%s: re-binning %d regions to %d bp %s bins", what, adata.n_vars, atac.config.bin_size,
             atac.config.genome)
    return read_region_matrix(adata, genome=atac.vocab.genome, bin_size=atac.config.bin_size)


def rna_counts(rna: ad.AnnData, genes: GeneVocab, *, what: str = "RNA data") -> tuple[sp.csr_matrix, dict]:
    """Raw counts of ``rna`` (``layers['counts']`` when present, else ``X``) in the CRAFT gene order and
    the alignment report (``n_shared``, ``n_missing``, ``missing``: missing genes are zeros)."""
    return genes.align(raw_counts(rna), rna.var_names, what=what)


def raw_counts(rna: ad.AnnData):
    """``rna.layers['counts']`` when present (the scanpy convention once X is normalised), else ``rna.X``."""
    return rna.layers.get("counts", rna.X)


def pair_cells(atac: ad.AnnData, rna: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """(ATAC rows, RNA rows) of the cells present in both, matched by ``obs_names`` (ATAC order).
    Cells of one modality only are left out with a warning; no shared name is an error."""
    for name, a in (("ATAC", atac), ("RNA", rna)):
        if not a.obs_names.is_unique:
            dup = a.obs_names[a.obs_names.duplicated()][:3].tolist()
            raise ValueError(f"{name} data: obs_names must be unique to pair cells (duplicated: {dup})")
    rna_rows = rna.obs_names.get_indexer(atac.obs_names)
    atac_rows = np.flatnonzero(rna_rows >= 0)
    if atac_rows.size < 2:
        raise ValueError(f"ATAC and RNA cells do not pair: {atac_rows.size} of {atac.n_obs} ATAC obs_names "
                         f"(e.g. {atac.obs_names[:2].tolist()}) are among the {rna.n_obs} RNA obs_names "
                         f"(e.g. {rna.obs_names[:2].tolist()}); CRAFT needs paired cells with the same names "
                         "(same barcodes and suffixes) in both files")
    if atac_rows.size < max(atac.n_obs, rna.n_obs):
        log.warning("pairing by obs_names: %d paired cells; %d ATAC-only and %d RNA-only cells left out",
                    atac_rows.size, atac.n_obs - atac_rows.size, rna.n_obs - atac_rows.size)
    return atac_rows, rna_rows[atac_rows]


def _training_genes(counts: sp.csr_matrix, names) -> list[str]:
    """The CRAFT gene list: the RNA genes with a count in at least one training cell."""
    expressed = np.asarray((counts > 0).sum(0)).ravel() > 0
    if not expressed.any():
        raise ValueError("RNA data: every gene has zero counts in the training cells")
    if not expressed.all():
        log.info("CRAFT genes: %d of %d RNA genes (dropping %d with no count)", expressed.sum(), len(expressed),
                 (~expressed).sum())
    return [str(g) for g in np.asarray(names)[expressed]]


# ------------------------------------------------------------------------------------------ training
def _atac_model(model, atac: ad.AnnData, recipe: CraftRecipe, run: Path, *, reuse: bool,
                trainer_kwargs) -> Atacformer:
    """The ATAC encoder: given, loaded, pretrained earlier in ``run`` (``reuse``: a resumed run), or now."""
    if isinstance(model, Atacformer):
        return model
    if model is not None:
        return Atacformer.from_pretrained(model)
    if reuse and (run / PRETRAIN_DIR / "config.json").exists():
        log.info("reusing the ATAC encoder pretrained earlier in %s", run / PRETRAIN_DIR)
        return Atacformer.from_pretrained(run / PRETRAIN_DIR)
    log.info("no ATAC model given: pretraining one on the %d ATAC cells (%s preset)", atac.n_obs,
             recipe.pretrain.preset)
    return pretrain(atac, out_dir=run / PRETRAIN_DIR, recipe=recipe.pretrain, overwrite=True,
                    trainer_kwargs=trainer_kwargs)


def craft_train(
    atac: ad.AnnData,
    rna: ad.AnnData,
    *,
    model: Atacformer | str | Path | None = None,
    recipe: CraftRecipe | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    genome: str | None = None,
    trainer_kwargs: dict | None = None,
) -> CraftModel:
    """Train CRAFT on paired cells: an ATAC encoder and an RNA encoder pulled together by a symmetric
    InfoNCE loss, plus an RNA-imputation head on the ATAC ``<cls>`` (:class:`~atacformer.train.craft.CraftPlan`).

    Parameters
    ----------
    atac
        Cells × bins (``atacformer ingest``) or cells × peaks (re-binned on the fly).
    rna
        Cells × genes raw counts (``layers['counts']`` when present, else ``X``) of the same cells
        (matched by ``obs_names``).
    model
        The ATAC encoder: an :class:`~atacformer.models.Atacformer` or a pretrained model directory.
        None = pretrain one on the ATAC cells with ``recipe.pretrain`` (saved under ``out_dir/atac_pretrain``).
    recipe
        :class:`~atacformer.train.craft.CraftRecipe` (default: the measured recipe).
    out_dir
        Where the CRAFT model (``save_pretrained``), checkpoints and logs go; None = a temporary folder.
    resume
        ``"last"`` or a checkpoint of an interrupted run in ``out_dir``.
    overwrite
        Replace an earlier run in ``out_dir``.
    genome
        Genome to re-bin a peak matrix to when no model is given (default ``atac.uns['genome']``, else hg38).
    trainer_kwargs
        ``lightning.Trainer`` options (``accelerator``, ``devices``, ...).

    Returns
    -------
    The trained :class:`~atacformer.models.craft.CraftModel` (its gene list: the RNA genes with counts).
    """
    recipe = recipe or CraftRecipe()
    atac_rows, rna_rows = pair_cells(atac, rna)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(out_dir) if out_dir is not None else Path(tmp)
        if model is None:
            atac = _rebin_for_pretraining(atac, genome)
        encoder = _atac_model(model, atac[atac_rows], recipe, run, reuse=resume is not None,
                              trainer_kwargs=trainer_kwargs)
        bins, genes, counts = _paired_inputs(atac, rna, encoder, atac_rows, rna_rows)
        torch.manual_seed(recipe.seed)  # the new parts' initialisation
        craft = CraftModel(encoder, genes, recipe.model).to(encoder.device)
        craft = fit_craft(craft, bins, counts, recipe=recipe, out_dir=run, resume=resume, overwrite=overwrite,
                          trainer_kwargs=trainer_kwargs)
    if out_dir is not None:
        craft.save_pretrained(out_dir)
        log.info("saved the CRAFT model to %s", out_dir)
    return craft


def _paired_inputs(atac: ad.AnnData, rna: ad.AnnData, encoder: Atacformer, atac_rows, rna_rows):
    """The paired cells' encoder bins, the training gene vocabulary and its aligned raw counts."""
    bins = atac_bins(atac, encoder)[atac_rows]
    X = sp.csr_matrix(raw_counts(rna)[rna_rows])
    genes = GeneVocab(_training_genes(X, rna.var_names))
    counts, _ = genes.align(X, rna.var_names)
    return bins, genes, counts


def _rebin_for_pretraining(atac: ad.AnnData, genome: str | None) -> ad.AnnData:
    if "bin_size" in atac.uns and "genome" in atac.uns:
        return atac
    return read_region_matrix(atac, genome=genome or atac.uns.get("genome", "hg38"))


# ------------------------------------------------------------------------------------------ inference
@torch.inference_mode()
def _encode_atac(craft: CraftModel, adata: ad.AnnData, *, batch_size: int, impute: bool = False) -> np.ndarray:
    """(n_cells, D) joint-space embeddings, or (n_cells, G) imputed log-normalised RNA, of ATAC cells."""
    was = craft.training
    craft.eval()
    bins = atac_bins(adata, craft.atac)
    cells = adata_cells(bins, craft.atac)
    width = len(craft.genes) if impute else craft.config.shared_dim
    out = np.zeros((len(cells), width), dtype=np.float32)
    packed = craft.device.type == "cuda"
    try:
        for idx, batch in inference_batches(cells, craft.atac.vocab, batch_size=batch_size,
                                            max_length=craft.atac.config.max_length, packed=packed):
            batch = batch.to(craft.device)
            out[idx] = (craft.impute(batch) if impute else craft.embed_atac(batch)).float().cpu().numpy()
    finally:
        craft.train(was)
    return out


@torch.inference_mode()
def _encode_rna(craft: CraftModel, adata: ad.AnnData, *, batch_size: int) -> tuple[np.ndarray, sp.csr_matrix, dict]:
    """(n_cells, D) joint-space embeddings of RNA cells, their counts in the CRAFT gene order and the
    gene-alignment report."""
    was = craft.training
    craft.eval()
    counts, report = rna_counts(adata, craft.genes)
    out = np.zeros((adata.n_obs, craft.config.shared_dim), dtype=np.float32)
    try:
        for s in range(0, adata.n_obs, batch_size):
            chunk = torch.from_numpy(counts[s:s + batch_size].toarray())
            out[s:s + batch_size] = craft.embed_rna(chunk).float().cpu().numpy()
    finally:
        craft.train(was)
    return out, counts, report


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def craft_embed(adata: ad.AnnData, craft: CraftModel | str | Path, *, modality: str = "atac",
                key_added: str = "X_craft", batch_size: int = 256, copy: bool = False) -> ad.AnnData | None:
    """Embed cells of one modality into the CRAFT joint space.

    Parameters
    ----------
    adata
        ``modality="atac"``: cells × bins or peaks; ``"rna"``: cells × genes raw counts
        (``layers['counts']`` when present; genes missing from the data are zeros, counted in ``uns``).
    craft
        A :class:`~atacformer.models.craft.CraftModel` or its directory.
    modality
        ``"atac"`` or ``"rna"``.
    key_added
        ``obsm`` key of the embedding.
    batch_size
        Cells per forward pass.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None (or the copy). Sets ``obsm[key_added]`` (n_obs × D, L2-normalised, float32) and ``uns[key_added]``
    (``modality``; for RNA the gene report ``n_genes``/``n_shared``/``n_missing``).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    _check_batch_size(batch_size)
    craft = load_craft(craft)
    adata = adata.copy() if copy else adata
    info: dict = {"modality": modality, "shared_dim": craft.config.shared_dim}
    if modality == "atac":
        emb = _encode_atac(craft, adata, batch_size=batch_size)
        info.update(genome=craft.atac.config.genome, bin_size=craft.atac.config.bin_size)
    else:
        emb, _, report = _encode_rna(craft, adata, batch_size=batch_size)
        info["genes"] = {k: v for k, v in report.items()}
    adata.obsm[key_added] = emb
    adata.uns[key_added] = info
    return adata if copy else None


def _log_normalized(counts: sp.csr_matrix, scale_factor: float) -> sp.csr_matrix:
    """Sparse log1p(counts / library size · scale_factor) (empty cells stay 0)."""
    lib = np.asarray(counts.sum(1)).ravel()
    out = (sp.diags(np.divide(scale_factor, lib, out=np.zeros_like(lib), where=lib > 0)) @ counts).tocsr()
    out.data = np.log1p(out.data)
    return out


def _knn_mean(ref: np.ndarray, values: sp.csr_matrix, query: np.ndarray, n_neighbors: int) -> np.ndarray:
    """(n_query, G) mean of ``values`` rows over each query's ``n_neighbors`` nearest ``ref`` rows (cosine)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, len(ref))
    idx = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query, return_distance=False)  # (n, k), unit rows
    W = sp.csr_matrix((np.full(idx.size, 1.0 / k), (np.repeat(np.arange(len(query)), k), idx.ravel())),
                      shape=(len(query), len(ref)))
    return np.asarray((W @ values).todense(), dtype=np.float32)


def impute_rna(atac: ad.AnnData, craft: CraftModel | str | Path, *, reference: ad.AnnData | None = None,
               n_neighbors: int = 50, batch_size: int = 256) -> ad.AnnData:
    """RNA expression imputed from ATAC: by the CRAFT imputation head, or from an RNA reference through
    the joint space.

    Parameters
    ----------
    atac
        Cells × bins or peaks (not changed).
    craft
        A :class:`~atacformer.models.craft.CraftModel` or its directory.
    reference
        None = the imputation head. An RNA AnnData (cells × genes raw counts, e.g. the training cells) =
        each ATAC cell gets the mean log-normalised expression of its ``n_neighbors`` nearest reference
        cells in the joint space (cosine). Not changed.
    n_neighbors
        Reference neighbours per cell (with ``reference``; 50 as Seurat's ``TransferData`` weights: sparse
        RNA needs many cells averaged).
    batch_size
        Cells per forward pass.

    Returns
    -------
    New AnnData cells × CRAFT genes: ``X`` = imputed log1p(counts / library size · scale_factor)
    (float32, dense), ``obs`` copied (same ``obs_names``), ``uns['craft_impute']`` (method, likelihood, ...).
    """
    _check_batch_size(batch_size)
    craft = load_craft(craft)
    info = {"likelihood": craft.config.likelihood, "scale_factor": craft.config.rna.scale_factor,
            "values": "log1p(counts / library size * scale_factor)", "method": "head"}
    if reference is None:
        X = _encode_atac(craft, atac, batch_size=batch_size, impute=True)
    else:
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        ref, counts, report = _encode_rna(craft, reference, batch_size=batch_size)
        values = _log_normalized(counts, craft.config.rna.scale_factor)
        X = _knn_mean(ref, values, _encode_atac(craft, atac, batch_size=batch_size), n_neighbors)
        info.update(method="joint kNN", n_neighbors=int(n_neighbors), reference_genes=report)
    out = ad.AnnData(X=X, obs=atac.obs.copy(), var=pd.DataFrame(index=pd.Index(craft.genes.genes, name="gene")))
    out.uns["craft_impute"] = info
    return out


def transfer_labels(
    query_atac: ad.AnnData, reference_rna: ad.AnnData, craft: CraftModel | str | Path, *, labels_key: str,
    n_neighbors: int = 15, threshold: float = 0.5, key_added: str = "craft_label", batch_size: int = 256,
    copy: bool = False,
) -> ad.AnnData | None:
    """Carry labels from an scRNA reference to scATAC query cells by kNN in the CRAFT joint space.

    Parameters
    ----------
    query_atac
        Query cells × bins or peaks.
    reference_rna
        Labelled reference cells × genes raw counts (not changed; cells with a missing label are ignored).
    craft
        A :class:`~atacformer.models.craft.CraftModel` or its directory.
    labels_key
        ``reference_rna.obs`` column to transfer.
    n_neighbors
        Reference neighbours per query cell (cosine in the joint space).
    threshold
        A query cell whose winning label has a vote share below this gets ``"unknown"``.
    key_added
        Output key.
    batch_size
        Cells per forward pass.
    copy
        Return a new AnnData instead of writing into ``query_atac``.

    Returns
    -------
    None (or the copy). Sets ``obs[key_added]`` (label or "unknown") and, with ``base`` = ``key_added``
    less a trailing ``"_label"`` (``"craft"`` by default), ``obs[base + "_confidence"]`` (vote share of the
    label), ``obsm[base + "_probs"]``; ``uns[key_added]`` (classes, parameters, reference gene report).
    """
    if labels_key not in reference_rna.obs:
        raise ValueError(f"reference_rna.obs has no {labels_key!r} column (have: {list(reference_rna.obs.columns)})")
    if n_neighbors < 1 or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"need n_neighbors >= 1 and 0 <= threshold <= 1, got {n_neighbors}, {threshold}")
    craft = load_craft(craft)
    classes = sorted(reference_rna.obs[labels_key].dropna().astype(str).unique())
    if not classes:
        raise ValueError(f"reference_rna.obs[{labels_key!r}] has no labels")
    ref, _, report = _encode_rna(craft, reference_rna, batch_size=batch_size)
    query = _encode_atac(craft, query_atac, batch_size=batch_size)
    probs = knn_probs(ref, label_codes(reference_rna.obs[labels_key], classes), query, len(classes),
                      n_neighbors=n_neighbors).astype(np.float32)
    adata = query_atac.copy() if copy else query_atac
    conf = probs.max(1)
    label = np.array(classes, dtype=object)[probs.argmax(1)]
    label[conf < threshold] = "unknown"
    adata.obs[key_added] = pd.Categorical(label)
    base = key_added.removesuffix("_label")
    adata.obs[f"{base}_confidence"] = conf
    adata.obsm[f"{base}_probs"] = probs
    adata.uns[key_added] = {"classes": classes, "labels_key": labels_key, "n_neighbors": int(n_neighbors),
                            "threshold": float(threshold), "reference_genes": report}
    return adata if copy else None
