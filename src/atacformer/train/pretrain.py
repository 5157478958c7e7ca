"""``pretrain``: one call from cells (corpus folders or an AnnData) to a saved model directory.

Output folder::

    out_dir/
      config.json, model.safetensors, vocab.json   the model (Atacformer.save_pretrained, rank 0)
      checkpoints/step=N.ckpt, last.ckpt            full training state every ``ckpt_every_n_steps``
      logs/version_*/metrics.csv                    every loss part, lr and validation metrics
      logs/ranks.json, logs/run.json                per rank: what it trained on + weight hash; the run's settings
      training_curve.png                            the losses over steps
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import torch

from ..models import Atacformer, AtacformerConfig
from ..pp import region_classes
from ..tokenize.sources import global_columns
from ..tokenize.vocab import CLASS_DECODERS
from .data import AtacformerDataModule
from .engine import (
    check_resume,
    fingerprint,
    fit,
    load_checkpoint,
    prepare_out_dir,
    resume_path,
)
from .plans import PretrainPlan
from .priors import balanced_state_weights, cell_neighbors, grouped_neighbors, separated_groups, svd_bin_embeddings
from .recipes import PretrainRecipe

log = logging.getLogger(__name__)


def region_classes_of(data: AtacformerDataModule, recipe: PretrainRecipe) -> tuple[list[str], np.ndarray] | None:
    """(class names, (n_bins,) class code of every bin of the genome) for the recipe's decoder, or None.

    ``recipe.region_classes``: a classes file (:func:`atacformer.pp.region_classes`: BED, HOMER output
    or bin TSV), ``"annotation"`` (``var['region_class']`` of an in-memory input — bins not in ``var``
    get its last category, the background — else the genome's built-in gene annotation), or None:
    ``"annotation"`` for the class decoders, no classes for ``chromosome``/``cross-attention``."""
    decoder = recipe.model.get("decoder", "chromosome")
    source = recipe.region_classes or ("annotation" if decoder in CLASS_DECODERS else None)
    if source is None:
        return None
    if decoder == "chromosome":
        raise ValueError(f"region_classes={source!r}: the chromosome decoder uses no region classes "
                         "(choose decoder='region-class', 'class-x-chromosome' or 'cross-attention')")
    bins = data.vocab.bins
    var = None if data.adata is None else data.adata.var
    if source == "annotation" and var is not None and "region_class" in var:
        col = pd.Categorical(var["region_class"])
        if (col.codes < 0).any():
            raise ValueError(f"var['region_class'] has {int((col.codes < 0).sum())} missing values")
        cols = global_columns(var, bins, "training AnnData")
        cols = np.arange(bins.n_bins) if cols is None else cols
        codes = np.full(bins.n_bins, len(col.categories) - 1, dtype=np.int64)
        codes[cols] = col.codes
        return [str(c) for c in col.categories], codes
    table = region_classes(bins.genome, bins.bin_size, None if source == "annotation" else source)
    if var is not None and "region_class" in var:  # the data's classes must be the model's
        table_vocab = data.vocab.with_decoder("region-class", list(table.cat.categories))
        table_vocab.check_region_classes(pd.Categorical(var["region_class"]).categories,
                                         what=f"training AnnData var['region_class'] (classes from {source})")
    return [str(c) for c in table.cat.categories], table.cat.codes.to_numpy().astype(np.int64)


def build_config(data: AtacformerDataModule, recipe: PretrainRecipe) -> AtacformerConfig:
    """The model config for this data: the recipe's preset and overrides, the data's vocabulary and
    label heads (one per label column of the data), and the data-derived fields: ``region_classes``
    (:func:`region_classes_of`), ``n_decoder_bins`` (``decoder_bins="observed"``: bins open in ≥ 1 training
    cell) and, for ``state_class_weights="auto"``, :func:`balanced_state_weights`."""
    fields: dict = {"heads": {col: list(data.label_names[col]) for col in data.label_keys if col in data.label_names}}
    classes = region_classes_of(data, recipe)
    if classes is not None:
        fields["region_classes"] = classes[0]
    config = AtacformerConfig.from_preset(recipe.preset, data.vocab, **{**fields, **recipe.model})
    weights = recipe.state_class_weights
    if config.decoder_bins == "observed" or weights == "auto":
        counts, n_cells = data.bin_open_counts()
        n_dec = int((counts > 0).sum()) if config.decoder_bins == "observed" else config.n_bins
        if weights == "auto":
            weights = balanced_state_weights(counts, n_cells, n_dec)
            log.info("state weights (balanced over %d cells × %d bins): %s", n_cells, n_dec,
                     ", ".join(f"{w:.3g}" for w in weights))
        config = dataclasses.replace(config, n_decoder_bins=n_dec if config.decoder_bins == "observed" else 0)
    n_dec = config.n_decoder_bins or config.n_bins
    budget = recipe.closed_bins_per_cell
    if "state0_sample_rate" not in recipe.model and budget is not None and n_dec > budget:
        config = dataclasses.replace(config, state0_sample_rate=budget / n_dec)
        log.info("closed bins importance-sampled at %.4f per step (%d of %d decoder bins per cell)",
                 budget / n_dec, budget, n_dec)
    if "state2_sample_max" not in recipe.model and config.state0_sample_rate is not None:
        config = dataclasses.replace(config, state2_sample_max=recipe.removed_bins_per_cell)
    return dataclasses.replace(config, state_class_weights=weights)


def init_from_data(model: Atacformer, data: AtacformerDataModule, recipe: PretrainRecipe) -> None:
    """Set the data-derived parts of a new model: the decoder's observed bins, the region class of every
    bin (class decoders) and (``e1_init="svd"``, in-memory inputs) the E1 rows of the observed bins from
    :func:`svd_bin_embeddings`."""
    if model.config.decoder_bins == "observed":
        counts, _ = data.bin_open_counts()
        model.state_decoder.set_bins(torch.from_numpy(np.flatnonzero(counts > 0)))
    if model.config.region_classes:
        names, codes = region_classes_of(data, recipe)
        if names != model.config.region_classes:
            raise ValueError(f"the data's region classes {names} are not the config's {model.config.region_classes}")
        model.set_region_classes(codes)
    X = data.train_matrix()
    if recipe.e1_init == "svd" and X is None:
        log.info("e1_init='svd' needs in-memory cells; corpus folders start from a random bin table")
    elif recipe.e1_init == "svd":
        bins, vectors = svd_bin_embeddings(X, model.config.k, seed=recipe.seed)
        with torch.no_grad():
            model.encoder.embed.e1.weight[model.bin_offset + torch.from_numpy(bins)] = torch.from_numpy(vectors)


def set_view_neighbors(data: AtacformerDataModule, recipe: PretrainRecipe) -> None:
    """Contrastive views borrow bins from each cell's nearest neighbours, searched as ``recipe.neighbor_scope``
    says. ``"auto"``: a kNN graph over all cells first; groups it keeps apart (a batch effect,
    :func:`~.priors.separated_groups`) search within themselves, the others among each other; when no group
    stands apart, batches stop holding one group too (``data.groups`` = None: nothing to correct)."""
    if data.adata is None or recipe.batch.contrastive_drop is None or recipe.batch.neighbor_add <= 0:
        return
    X = data._cells.X
    if X.shape[0] < 2:
        return
    k, method, scope = recipe.n_neighbors, recipe.contrastive_neighbors, recipe.neighbor_scope
    log.info("contrastive views: %d nearest neighbours (%s, scope %s) of %d cells", k, method, scope, X.shape[0])
    groups, within = data.groups, None
    if groups is None or scope == "all":
        groups, within = np.zeros(X.shape[0], dtype=np.int64), []
    elif scope == "auto":
        everyone = cell_neighbors(X, k, method=method, seed=recipe.seed)
        within = separated_groups(everyone, groups)
        if not within:
            log.info("no batch_key group stands apart from the others: batches and neighbours span all cells")
            data.groups = None
            data.set_neighbors(everyone[:, np.arange(k) % everyone.shape[1]])
            return
    data.set_neighbors(grouped_neighbors(X, groups, k, method=method, seed=recipe.seed, within=within))


def _init_model(init: Atacformer | str | Path) -> Atacformer:
    if isinstance(init, Atacformer):
        return init
    return Atacformer.from_pretrained(init)


def _config_and_identity(data: AtacformerDataModule, recipe: PretrainRecipe, ckpt_path: Path | None,
                         init: Atacformer | None) -> tuple[AtacformerConfig, dict]:
    """The model config (the checkpoint's when resuming, ``init``'s when continuing a model) and the run's
    identity (data + recipe fingerprints; the schedule may be extended on resume, and the architecture is
    the checkpoint's)."""
    settings = {k: v for k, v in recipe.to_dict().items() if k not in ("trainer", "model", "preset")}
    run_info = {"data": fingerprint(data.fingerprint()), "recipe": fingerprint(settings)}
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        check_resume(ckpt, ckpt_path, run_info)
        config = AtacformerConfig.from_dict(ckpt["atacformer"]["run"]["config"])
        data.vocab.check_data({"genome": config.genome, "bin_size": config.bin_size}, what=f"checkpoint {ckpt_path}")
        return config, run_info
    if init is not None:
        init.check_data({"genome": data.vocab.genome.name, "bin_size": data.vocab.bin_size}, what="training data")
        return AtacformerConfig.from_dict(init.config.to_dict()), run_info
    return build_config(data, recipe), run_info


def pretrain(
    inputs: str | Path | ad.AnnData | Sequence[str | Path],
    *,
    out_dir: str | Path,
    recipe: PretrainRecipe | None = None,
    val_inputs: Sequence[str | Path] | None = None,
    dna_embeddings: torch.Tensor | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    trainer_kwargs: dict | None = None,
    callbacks: Sequence = (),
    init: Atacformer | str | Path | None = None,
) -> Atacformer:
    """Pretrain an Atacformer and save it to ``out_dir`` (layout in the module docstring).

    Parameters
    ----------
    inputs
        Corpus folder(s) from ``atacformer tokenize``, or one AnnData / ``.h5ad`` (cells × bins).
    out_dir
        Run folder. A folder that already holds a model or checkpoints is refused unless ``overwrite``
        (which first removes the old checkpoints and logs) or ``resume``.
    recipe
        :class:`~atacformer.train.PretrainRecipe` (default: the measured recipe).
    val_inputs
        Validation corpus folder(s) (an AnnData is split by ``recipe.data.val_fraction``).
    dna_embeddings
        Optional frozen (V, dna_dim) per-bin DNA table aligned to the vocabulary.
    resume
        ``"last"`` or a checkpoint path: continue a run exactly where it stopped (same batches, masks,
        dropout and optimizer state). A checkpoint of other data or another recipe is refused.
    overwrite
        Replace an existing model/run in ``out_dir``.
    trainer_kwargs
        ``lightning.Trainer`` options: ``devices``, ``num_nodes``, ``strategy`` (``"ddp"``/``"fsdp"``),
        ``accelerator``, ``precision`` (bf16 autocast by default on GPU).
    callbacks
        Extra Lightning callbacks (e.g. a step timer).
    init
        Continued pretraining: start from this model (or model directory), e.g. a single-cell model trained
        further on bulk region sets. Its config and weights are used as they are (the recipe's ``preset``,
        ``model`` overrides, ``e1_init`` and ``state_class_weights`` are not applied); the data must be on its
        genome and bin size.

    Returns
    -------
    The trained :class:`~atacformer.models.Atacformer` (also saved to ``out_dir``).
    """
    recipe = recipe or PretrainRecipe()
    out_dir = Path(out_dir)
    ckpt_path = resume_path(resume, out_dir)
    prepare_out_dir(out_dir, resume=ckpt_path, overwrite=overwrite)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    data = AtacformerDataModule(inputs, data=recipe.data, batch=recipe.batch, val_inputs=val_inputs, seed=recipe.seed)
    init = None if init is None else _init_model(init)
    config, run_info = _config_and_identity(data, recipe, ckpt_path, init)
    _fit_data_to_config(data, config, recipe)
    model = _initial_model(config, dna_embeddings, data, recipe, init=init, resuming=ckpt_path is not None)
    plan = PretrainPlan(model, optimizer=dataclasses.replace(recipe.optimizer, lr=recipe.lr),
                        max_steps=recipe.trainer.max_steps, seed=recipe.seed,
                        run_info={**run_info, "config": config.to_dict()})
    trainer = fit(plan, data, out_dir=out_dir, settings=recipe.trainer, resume=ckpt_path, callbacks=callbacks,
                  trainer_kwargs=trainer_kwargs)
    return _saved(trainer, config, dna_embeddings, out_dir)


def _initial_model(config: AtacformerConfig, dna_embeddings, data: AtacformerDataModule, recipe: PretrainRecipe, *,
                   init: Atacformer | None, resuming: bool) -> Atacformer:
    """The network before step 0: ``init``'s weights, else initialised from the data (a resumed run loads its
    checkpoint later)."""
    model = Atacformer(config, dna_embeddings=dna_embeddings)
    if not resuming and init is not None:
        model.load_state_dict(init.state_dict())
    elif not resuming:
        init_from_data(model, data, recipe)
    return model


def _fit_data_to_config(data: AtacformerDataModule, config: AtacformerConfig, recipe: PretrainRecipe) -> None:
    """Sentences as the model reads them: its length, its decoder's ``<eos>`` tokens, second views if used."""
    data.max_length = config.max_length
    data.use_vocab(config.vocab())
    if config.contrastive_weight == 0 and config.contrastive_decoder_weight == 0:  # no second views to build
        data.batch = dataclasses.replace(data.batch, contrastive_drop=None)
    else:
        set_view_neighbors(data, recipe)


def _saved(trainer, config: AtacformerConfig, dna_embeddings, out_dir: Path) -> Atacformer:
    """The trained weights (gathered under FSDP) in a fresh model, saved to ``out_dir`` by rank 0."""
    state = trainer.strategy.lightning_module_state_dict()
    model = Atacformer(config, dna_embeddings=dna_embeddings)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    if trainer.is_global_zero:
        model.save_pretrained(out_dir)
        log.info("saved the model to %s", out_dir)
    return model
