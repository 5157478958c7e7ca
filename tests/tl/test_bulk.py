"""Bulk region sets (BED files, one row each) on the toy genome: longer than a sentence, so training reads a
fresh random subset per batch and prediction averages several; heads for two label columns; nearest sets."""

import numpy as np
import pandas as pd
import pytest
import torch

from atacformer import io
from atacformer.genome import Genome
from atacformer.tl import annotate, embed, finetune, similar_sets
from atacformer.tl.embed import REGION_SET_SUBSETS
from atacformer.train import BatchSettings, ClassifierPlan, FinetuneRecipe, OptimizerSettings, encode_cells
from atacformer.train.batcher import adata_cells, inference_batches

from .conftest import CHROM_SIZES, toy_model

MAX_LENGTH = 16  # 1 <cls> + 2 <eos> + 13 bins: the sets below open 20-45 of the 80 bins
TYPES, ASSAYS = ("A", "B", "C"), ("atac", "dnase")


def write_sets(folder, n_per_type=8, seed=0, *, missing_type=()):
    """BED files of region sets: type t opens most of bins 20t..20t+19, assay 'dnase' bins 60-79, plus
    background; a sample table (sample, cell_type, assay) beside them. Returns (paths, table path)."""
    rng = np.random.default_rng(seed)
    bins = Genome.from_chrom_sizes(CHROM_SIZES, name="toy").bins(5000)
    var = bins.var()
    folder.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for t, name in enumerate(TYPES):
        for i in range(n_per_type):
            assay = ASSAYS[i % 2]
            p = np.full(bins.n_bins, 0.08)
            p[t * 20 : (t + 1) * 20] = 0.9
            if assay == "dnase":
                p[60:80] = 0.9
            open_bins = np.flatnonzero(rng.random(bins.n_bins) < p)
            sample = f"{name}{i}_s{seed}"
            v = var.iloc[open_bins]
            path = folder / f"{sample}.bed"
            path.write_text("".join(f"{c}\t{s + 100}\t{s + 600}\tpeak{j}\n"
                                    for j, (c, s) in enumerate(zip(v["chrom"], v["start"], strict=True))))
            paths.append(path)
            rows.append({"sample": sample, "cell_type": "" if sample in missing_type else name, "assay": assay})
    table = folder / "samples.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return paths, table


def read_sets(folder, **kw):
    paths, table = write_sets(folder, **kw)
    return io.read_bed(paths, genome=Genome.from_chrom_sizes(CHROM_SIZES, name="toy"), sample_table=table)


@pytest.fixture
def long_model():
    return toy_model(max_length=MAX_LENGTH)


def test_training_batches_draw_a_fresh_subset_of_a_long_set(tmp_path, long_model):
    sets = read_sets(tmp_path)
    cells = adata_cells(sets, long_model)
    long = cells[0]["bin_ids"]
    assert len(long) > MAX_LENGTH - 3
    settings = BatchSettings(mask_fraction=0.0)
    seen, sentences = set(), []
    for step in range(12):  # the stream seeds each batch by (seed, rank, batch index)
        b = settings.collate([cells[0], cells[1]], long_model.vocab, np.random.default_rng([0, 0, step, 2]),
                             max_length=MAX_LENGTH)
        ids = long_model.vocab.token_to_bin(b.input_ids[: b.cu_seqlens[1]].numpy())
        ids = ids[ids >= 0]
        assert len(ids) == MAX_LENGTH - 3 and np.isin(ids, long).all()
        sentences.append(tuple(ids))
        seen |= set(ids.tolist())
        # the open bins left out of the sentence are state-2 targets (open, not seen)
        mine = b.target_cell == 0
        assert int((b.target_state[mine] == 2).sum()) == len(long) - len(ids)
    assert len(set(sentences)) == 12 and seen == set(long.tolist())  # every batch another subset, all bins reached


@torch.no_grad()
def _one_subset(model, cells, subset):
    """<cls> embeddings of every row read through its subset number ``subset`` (padded batches, as on CPU)."""
    batches = inference_batches(cells, model.vocab, batch_size=64, max_length=MAX_LENGTH, packed=False, subset=subset)
    return np.concatenate([model.eval().embed(b).numpy() for _, b in batches])


def test_prediction_averages_several_subsets_deterministically(tmp_path, long_model):
    sets = read_sets(tmp_path)
    cells = adata_cells(sets, long_model) + [{"bin_ids": np.array([3, 41, 70])}]  # and one short row
    one, _ = encode_cells(long_model, cells, n_subsets=1)
    default, _ = encode_cells(long_model, cells)
    four, _ = encode_cells(long_model, cells, n_subsets=4)
    again, _ = encode_cells(long_model, cells, n_subsets=4, batch_size=5)
    np.testing.assert_array_equal(four, again)  # seeded by each row's content, not by its batch
    np.testing.assert_array_equal(default, four)  # long rows: CELL_SUBSETS (4) subsets by default
    passes = [_one_subset(long_model, cells, s) for s in range(4)]
    np.testing.assert_allclose(four[:-1], np.mean(passes, 0)[:-1], atol=1e-6)
    np.testing.assert_array_equal(passes[0], one)  # subset 0 = the single pass
    assert all(np.abs(passes[s][:-1] - passes[0][:-1]).max() > 1e-4 for s in (1, 2, 3))  # other subsets
    np.testing.assert_array_equal(four[-1], one[-1])  # a row that fits is read once
    with pytest.raises(ValueError, match="n_subsets"):
        encode_cells(long_model, cells, n_subsets=0)
    # tl.embed on region sets (from BED files) averages REGION_SET_SUBSETS subsets by default
    embed(sets, long_model, progress=False)
    assert sets.uns["X_atacformer"]["n_subsets"] == REGION_SET_SUBSETS
    np.testing.assert_allclose(sets.obsm["X_atacformer"],
                               encode_cells(long_model, cells[:-1], n_subsets=REGION_SET_SUBSETS)[0], atol=1e-6)
    embed(sets, long_model, progress=False, n_subsets=1, key_added="X_one")
    np.testing.assert_array_equal(sets.obsm["X_one"], one[:-1])


def test_two_label_columns_train_and_predict(tmp_path, long_model):
    ref = read_sets(tmp_path / "ref", n_per_type=10, missing_type=("A1_s0", "B2_s0"))
    ref.obs.loc["C3_s0", "assay"] = np.nan  # a row with only one of its labels
    assert ref.obs["cell_type"].isna().sum() == 2
    before = {k: v.clone() for k, v in long_model.state_dict().items()}
    recipe = FinetuneRecipe(epochs=30, patience=30, batch_size=8, train_embeddings=True)
    tuned = finetune(ref, long_model, labels_key="cell_type,assay", recipe=recipe)
    assert all(torch.equal(before[k], v) for k, v in long_model.state_dict().items()) and not len(long_model.heads)
    info = ref.uns["atacformer_finetune"]
    assert tuned.config.heads == {"cell_type": list(TYPES), "assay": list(ASSAYS)} == info["heads"]
    assert info["n_train"] + info["n_val"] == ref.n_obs  # rows missing one label still train the other head
    assert {"val_accuracy_cell_type", "val_macro_f1_assay"} <= set(info["history"].columns)
    query = read_sets(tmp_path / "query", n_per_type=6, seed=3)
    annotate(query, tuned, threshold=0.0)
    assert query.uns["atacformer_label"]["n_subsets"] == REGION_SET_SUBSETS
    for col in ("cell_type", "assay"):
        key = query.uns["atacformer_label"]["columns"][col]["key"]
        assert key == f"atacformer_label_{col}"
        acc = (query.obs[key].astype(str) == query.obs[col]).mean()
        assert acc >= 0.8, (col, acc)  # chance: 0.33 and 0.5
        probs = query.obsm[f"{key}_probs"]
        assert probs.shape == (query.n_obs, len(tuned.config.heads[col]))
        np.testing.assert_allclose(query.obs[f"{key}_confidence"], probs.max(1))
    # one column asked for: the plain key
    annotate(query, tuned, labels_key="assay", threshold=0.0, key_added="only")
    assert "only" in query.obs and query.uns["only"]["classes"] == list(ASSAYS)


def test_region_sets_get_the_region_set_recipe_by_default(tmp_path, long_model):
    ref = read_sets(tmp_path / "ref", n_per_type=4)
    finetune(ref, long_model, labels_key="cell_type")
    info, preset = ref.uns["atacformer_finetune"], FinetuneRecipe.region_sets()
    assert info["monitor"] == preset.monitor == "macro_f1" != FinetuneRecipe().monitor
    assert len(info["history"]) == preset.epochs  # patience = epochs: no early stop on the toy sets


def test_missing_labels_do_not_reach_the_loss(tmp_path, long_model):
    sets = read_sets(tmp_path)
    model = toy_model(max_length=MAX_LENGTH)
    model.set_head("cell_type", list(TYPES))
    model.set_head("assay", list(ASSAYS))
    plan = ClassifierPlan(model, class_weights={"cell_type": None, "assay": None}, optimizer=OptimizerSettings(),
                          max_steps=1)
    cells = adata_cells(sets, model)[:4]
    for c, t, a in zip(cells, [0, -1, 2, -1], [-1, -1, -1, -1], strict=True):
        c.update(cell_type=t, assay=a)
    batch = BatchSettings(mask_fraction=0.0).collate(cells, model.vocab, np.random.default_rng(0),
                                                     max_length=MAX_LENGTH, label_keys=["cell_type", "assay"])
    loss, logs = plan.step(batch, "train")
    h = model.encode(batch)[batch.cls_index]
    ref = torch.nn.functional.cross_entropy(model.heads["cell_type"](h)[[0, 2]], torch.tensor([0, 2]))
    torch.testing.assert_close(logs["cell_type"], ref)
    assert logs["assay"].item() == 0.0 and "assay_accuracy" not in logs
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ValueError, match="head per label column"):
        ClassifierPlan(model, class_weights={"tissue": None}, optimizer=OptimizerSettings(), max_steps=1)


def test_similar_sets_finds_the_true_nearest_set(tmp_path):
    ref = read_sets(tmp_path / "ref", n_per_type=4)
    rng = np.random.default_rng(0)
    ref.obsm["X_e"] = rng.normal(size=(ref.n_obs, 6))
    query = ref[[5, 0, 9]].copy()
    query.obs_names = ["q5", "q0", "q9"]
    query.obsm["X_e"] = ref.obsm["X_e"][[5, 0, 9]] + 0.01 * rng.normal(size=(3, 6))
    table = similar_sets(query, ref, use_rep="X_e", n_neighbors=3)
    top = table[table["rank"] == 1].set_index("query")["reference"]
    assert top.to_dict() == {"q5": ref.obs_names[5], "q0": ref.obs_names[0], "q9": ref.obs_names[9]}
    assert len(table) == 9 and (np.diff(table["similarity"].to_numpy().reshape(3, 3), axis=1) <= 0).all()
    info = query.uns["similar_sets"]
    assert info["table"].equals(table) and info["params"]["metric"] == "cosine"
    # Jaccard over the open bins: a set's own copy is its nearest set, similarity 1
    jac = similar_sets(query, ref, use_rep="X", n_neighbors=1, key_added="jac")
    assert list(jac["reference"]) == list(ref.obs_names[[5, 0, 9]]) and np.allclose(jac["similarity"], 1.0)
    X = (ref.X[[5]] > 0).toarray()[0]
    other = (ref.X[[1]] > 0).toarray()[0]
    within = similar_sets(ref, use_rep="X", n_neighbors=ref.n_obs - 1, key_added="self")
    assert ref.obs_names[5] not in set(within.loc[within["query"] == ref.obs_names[5], "reference"])  # not itself
    pair = within[(within["query"] == ref.obs_names[5]) & (within["reference"] == ref.obs_names[1])]
    assert pair["similarity"].item() == pytest.approx((X & other).sum() / (X | other).sum())
    with pytest.raises(ValueError, match="obsm has no 'X_missing'"):
        similar_sets(query, ref, use_rep="X_missing")
    with pytest.raises(ValueError, match="metric"):
        similar_sets(query, ref, use_rep="X_e", metric="manhattan")
