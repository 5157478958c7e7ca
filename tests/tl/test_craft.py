"""CRAFT tools on 120 shipped SNARE-seq cells (mm10): train (also pretraining on the fly), embed, impute,
transfer; save/load; exact resume; the bad-input errors."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from atacformer._snareseq import snareseq
from atacformer.io.regions import read_region_matrix
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.models.craft import CraftModel
from atacformer.tl.craft import (
    atac_bins,
    craft_embed,
    craft_train,
    impute_rna,
    pair_cells,
    transfer_labels,
)
from atacformer.tokenize.vocab import BinVocab
from atacformer.train import read_metrics, weights_digest
from atacformer.train.craft import CraftRecipe, library_split

N_CELLS = 120


@pytest.fixture(scope="module")
def pairs():
    """(ATAC peaks, ATAC bins, RNA counts) of 120 paired cells, the same obs_names in the same order."""
    regions, rna = snareseq(bin_size=None)
    pick = np.random.default_rng(0).choice(regions.n_obs, N_CELLS, replace=False)
    regions, rna = regions[pick].copy(), rna[pick].copy()
    return regions, read_region_matrix(regions, genome="mm10"), rna


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return Atacformer(AtacformerConfig.from_preset("tiny", BinVocab("mm10"), dropout=0.1))


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    """A CRAFT model trained from the peaks with no ATAC model given (pretrained on the fly), saved."""
    regions, _, rna = pairs
    out = tmp_path_factory.mktemp("craft") / "model"
    craft = craft_train(regions, rna, recipe=CraftRecipe.quick(max_steps=3), out_dir=out, genome="mm10")
    return craft, out


def test_train_from_peaks_pretrains_on_the_fly_and_saves(trained, pairs):
    craft, out = trained
    rna = pairs[2]
    for name in ("craft_config.json", "craft.safetensors", "genes.json", "atac/config.json",
                 "atac_pretrain/config.json", "logs"):
        assert (out / name).exists(), name
    expressed = np.asarray((rna.X > 0).sum(0)).ravel() > 0
    assert craft.genes.genes == list(rna.var_names[expressed])  # never-expressed genes are dropped
    assert json.loads((out / "atac" / "vocab.json").read_text())["genome"] == "mm10"
    assert read_metrics(out / "logs")["train/contrastive"].notna().sum() == 3


def test_embed_impute_transfer_shapes_keys_and_save_load(trained, pairs):
    craft, out = trained
    regions, bins, rna = pairs
    peaks, rna_q = regions.copy(), rna.copy()
    craft_embed(peaks, craft, modality="atac")  # peaks: re-binned on the fly
    craft_embed(rna_q, out, modality="rna")  # from the saved directory
    for a in (peaks, rna_q):
        emb = a.obsm["X_craft"]
        assert emb.shape == (N_CELLS, craft.config.shared_dim) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert rna_q.uns["X_craft"]["genes"]["n_missing"] == 0
    loaded = CraftModel.from_pretrained(out)
    same = craft_embed(bins, loaded, modality="atac", copy=True)  # bins as given, the reloaded model
    np.testing.assert_allclose(same.obsm["X_craft"], peaks.obsm["X_craft"], atol=1e-6)
    imputed = impute_rna(regions, craft)
    assert imputed.shape == (N_CELLS, len(craft.genes)) and list(imputed.var_names) == craft.genes.genes
    assert list(imputed.obs_names) == list(regions.obs_names) and (imputed.X >= 0).all()
    query = regions.copy()
    assert transfer_labels(query, rna, craft, labels_key="cell_type_coarse", n_neighbors=5, threshold=0.0) is None
    classes = sorted(rna.obs["cell_type_coarse"].astype(str).unique())
    assert set(query.obs["craft_label"].astype(str)) <= set(classes)
    conf = query.obs["craft_confidence"].to_numpy()
    assert ((conf > 0) & (conf <= 1)).all() and query.obsm["craft_probs"].shape == (N_CELLS, len(classes))
    strict = transfer_labels(regions, rna, craft, labels_key="cell_type_coarse", n_neighbors=5, threshold=1.0,
                             copy=True)
    unknown = strict.obs["craft_label"].astype(str) == "unknown"
    np.testing.assert_array_equal(unknown, conf < 1.0)
    assert "craft_label" not in regions.obs and "X_craft" not in rna.obsm  # arguments are not changed


def test_craft_run_resumes_exactly(pairs, encoder, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, bins, rna = pairs
        recipe = CraftRecipe.quick(max_steps=6).replace(
            trainer={"ckpt_every_n_steps": 3}, model={"rna": {"dropout": 0.2}}, batch={"mask_fraction": 0.2})
        full = craft_train(bins, rna, model=encoder, recipe=recipe, out_dir=tmp_path / "A")
        resumed = craft_train(bins, rna, model=encoder, recipe=recipe, out_dir=tmp_path / "B",
                              resume=tmp_path / "A" / "checkpoints" / "step=3.ckpt")
    finally:
        torch.set_num_threads(n)
    a, b = read_metrics(tmp_path / "A" / "logs"), read_metrics(tmp_path / "B" / "logs")
    assert b["step"].min() == 3 and b["step"].max() == a["step"].max() == 5
    after = a[a["step"] >= 3].reset_index(drop=True)
    for col in ("train/loss", "train/contrastive", "train/impute", "train/top1"):
        np.testing.assert_array_equal(after[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    assert not np.array_equal(a["train/loss"].to_numpy()[:3], after["train/loss"].to_numpy())  # it trained
    assert weights_digest(full) == weights_digest(resumed)


def test_validation_keeps_the_best_checks_weights_and_stops_early(pairs, encoder, tmp_path):
    _, bins, rna = pairs
    recipe = CraftRecipe.quick(max_steps=40).replace(val_fraction=0.25, patience=2,
                                                     trainer={"val_every_n_steps": 2}, optimizer={"lr": 3e-2})
    craft = craft_train(bins, rna, model=encoder, recipe=recipe, out_dir=tmp_path / "run")
    logs = read_metrics(tmp_path / "run" / "logs")
    val = logs.dropna(subset=["val/foscttm"])
    best_step = int(val.loc[val["val/foscttm"].idxmin(), "step"])
    assert logs["step"].max() < 39  # stopped: 2 checks without improvement
    assert logs["step"].max() >= best_step + 2 * 2 - 1
    ckpt = torch.load(tmp_path / "run" / "best" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == best_step + 1  # the best check's weights ...
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    for k, v in craft.state_dict().items():  # ... are the returned ones (not the last step's)
        if not k.startswith("atac."):
            torch.testing.assert_close(v, state[k], msg=k)


def test_validation_holds_out_whole_libraries_when_there_are_several():
    obs = pd.DataFrame({"batch": np.repeat(list("ABCDEF"), [100, 120, 90, 80, 110, 100])})
    train, val = library_split(obs, 0.25, seed=0)
    held = set(obs["batch"].iloc[val])
    assert len(val) >= 0.25 * len(obs) and not held & set(obs["batch"].iloc[train])  # whole libraries
    assert len(set(obs["batch"].iloc[train])) >= 2
    assert library_split(obs, 0.9, seed=0)[0].size > 0  # two libraries always stay for training
    assert library_split(obs.assign(batch="A"), 0.25) is None  # one library: random cells instead
    assert library_split(obs, 0.0) is None


def test_pairing_by_obs_names(pairs):
    _, bins, rna = pairs
    shuffled = rna[::-1][:100]
    atac_rows, rna_rows = pair_cells(bins, shuffled)
    assert len(atac_rows) == 100
    assert list(bins.obs_names[atac_rows]) == list(shuffled.obs_names[rna_rows])
    other = rna.copy()
    other.obs_names = [f"{n}-1" for n in rna.obs_names]
    with pytest.raises(ValueError, match="do not pair"):
        pair_cells(bins, other)
    dup = rna.copy()
    dup.obs_names = ["x"] * N_CELLS
    with pytest.raises(ValueError, match="must be unique"):
        pair_cells(bins, dup)


def test_bad_inputs(trained, pairs, caplog):
    craft, _ = trained
    regions, bins, rna = pairs
    renamed = rna.copy()
    renamed.var_names = [f"{g}_x" if i % 2 else g for i, g in enumerate(rna.var_names)]
    with caplog.at_level(logging.WARNING):
        craft_embed(renamed, craft, modality="rna")
    report = renamed.uns["X_craft"]["genes"]
    assert report["n_missing"] == len(set(craft.genes.genes) - set(renamed.var_names)) > 0
    assert "missing and set to 0" in caplog.text
    none = rna.copy()
    none.var_names = [f"ENSMUSG{i:011d}" for i in range(rna.n_vars)]
    with pytest.raises(ValueError, match="none of its"):
        craft_embed(none, craft, modality="rna")
    normalised = rna.copy()
    normalised.X = np.log1p(normalised.X.toarray().astype(np.float32))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        craft_embed(normalised, craft, modality="rna")
    assert "not integers" in caplog.text and "log-normalised" in caplog.text
    wrong = bins.copy()
    wrong.uns["genome"] = "hg38"
    with pytest.raises(ValueError, match="hg38"):
        craft_embed(wrong, craft, modality="atac")
    peaks = regions.copy()
    peaks.uns["genome"] = "hg38"
    with pytest.raises(ValueError, match="genome 'hg38' differs"):
        atac_bins(peaks, craft.atac)
    with pytest.raises(ValueError, match="modality"):
        craft_embed(bins, craft, modality="protein")
    with pytest.raises(ValueError, match="no 'celltype' column"):
        transfer_labels(bins, rna, craft, labels_key="celltype")
