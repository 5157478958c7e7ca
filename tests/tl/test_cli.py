"""The downstream subcommands end to end on toy data (tiny models saved to tmp_path)."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atacformer.cli import main
from atacformer.genome import get_genome
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.tokenize.vocab import BinVocab

from .conftest import toy_adata, toy_model


def test_finetune_annotate_map_integrate(tmp_path, capsys):
    adata = toy_adata(batch_shift=True)
    adata.write_h5ad(tmp_path / "ref.h5ad")
    toy_adata(seed=4, n_per_type=8, batch_shift=True).write_h5ad(tmp_path / "query.h5ad")
    toy_model().save_pretrained(tmp_path / "model")
    tune = ["finetune", str(tmp_path / "ref.h5ad"), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "tuned"),
            "--epochs", "8", "--stratify-key", "donor"]
    assert main(tune) == 0
    assert (tmp_path / "tuned" / "checkpoints" / "last.ckpt").exists()
    assert Atacformer.from_pretrained(tmp_path / "tuned").config.cell_type_names == ["A", "B", "C"]
    assert main(tune) == 2 and "--overwrite" in capsys.readouterr().err  # an existing model is refused
    assert main(["annotate", str(tmp_path / "query.h5ad"), "--model", str(tmp_path / "tuned"),
                 "-o", str(tmp_path / "annotated.h5ad"), "--threshold", "0"]) == 0
    out = ad.read_h5ad(tmp_path / "annotated.h5ad")
    assert (out.obs["atacformer_label"].astype(str) == out.obs["cell_type"]).mean() > 0.8
    again = ["annotate", str(tmp_path / "query.h5ad"), "--model", str(tmp_path / "tuned"),
             "-o", str(tmp_path / "annotated.h5ad"), "--key-added", "second"]
    assert main(again) == 2 and "--overwrite" in capsys.readouterr().err
    assert "second" not in ad.read_h5ad(tmp_path / "annotated.h5ad").obs  # not touched
    assert main([*again, "--overwrite"]) == 0 and "second" in ad.read_h5ad(tmp_path / "annotated.h5ad").obs
    mapped = ["map", str(tmp_path / "query.h5ad"), "--reference", str(tmp_path / "ref.h5ad"),
              "--model", str(tmp_path / "model"), "-o", str(tmp_path / "mapped.h5ad"), "--n-neighbors", "5"]
    assert main(mapped) == 0
    assert "atacformer_mapped_uncertainty" in ad.read_h5ad(tmp_path / "mapped.h5ad").obs
    assert ad.read_h5ad(tmp_path / "mapped.h5ad").uns["atacformer_mapped"]["n_neighbors"] == 5
    assert main(mapped) == 2
    assert main(["integrate", str(tmp_path / "ref.h5ad"), "--model", str(tmp_path / "model"), "--batch-key", "donor",
                 "-o", str(tmp_path / "int.h5ad"), "--epochs", "1", "--save-model", str(tmp_path / "corr"),
                 "--reference-batch", "d2"]) == 0
    integrated = ad.read_h5ad(tmp_path / "int.h5ad")
    assert integrated.obsm["X_atacformer_integrated"].shape == (90, 32)
    assert integrated.uns["X_atacformer_integrated"]["mnn_correct"]["reference"] == "d2"  # as asked
    assert (tmp_path / "corr" / "model.safetensors").exists()
    assert main(["integrate", str(tmp_path / "ref.h5ad"), "--model", str(tmp_path / "model"), "--batch-key", "donor",
                 "-o", str(tmp_path / "int2.h5ad"), "--epochs", "1", "--no-correct", "--save-model",
                 str(tmp_path / "corr")]) == 2  # the corrected model folder already holds a model
    assert not (tmp_path / "int2.h5ad").exists()
    assert main(["integrate", str(tmp_path / "ref.h5ad"), "--model", str(tmp_path / "model"), "--batch-key", "donor",
                 "-o", str(tmp_path / "int2.h5ad"), "--epochs", "1", "--no-correct"]) == 0
    assert "X_atacformer_integrated_model" not in ad.read_h5ad(tmp_path / "int2.h5ad").obsm
    # errors: missing file → exit code 2 with a message, nothing written
    assert main(["annotate", str(tmp_path / "nope.h5ad"), "--model", str(tmp_path / "tuned"),
                 "-o", str(tmp_path / "x.h5ad")]) == 2
    assert "nope.h5ad" in capsys.readouterr().err and not (tmp_path / "x.h5ad").exists()


def test_finetune_resume_continues_the_run(tmp_path, capsys):
    toy_adata(n_per_type=10).write_h5ad(tmp_path / "cells.h5ad")
    toy_model().save_pretrained(tmp_path / "model")
    base = ["finetune", str(tmp_path / "cells.h5ad"), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "ft")]
    assert main([*base, "--epochs", "2"]) == 0
    first = sorted(p.name for p in (tmp_path / "ft" / "checkpoints").iterdir())
    # resume the 2-epoch run from its last checkpoint with a longer schedule: it goes on, not from scratch
    assert main([*base, "--epochs", "3", "--resume", "last"]) == 0
    assert "fine-tuned" in capsys.readouterr().out
    steps = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ft" / "checkpoints").glob("step=*.ckpt"))
    assert len(first) == 3 and len(steps) == 3 and steps[-1] == 3 * steps[0]
    assert main([*base, "--epochs", "1", "--resume", str(tmp_path / "nope.ckpt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_embed_writes_output(tmp_path):
    toy_adata(n_per_type=4).write_h5ad(tmp_path / "cells.h5ad")
    toy_model().save_pretrained(tmp_path / "model")
    assert main(["embed", str(tmp_path / "model"), str(tmp_path / "cells.h5ad"), "--output", str(tmp_path / "e.h5ad"),
                 "--no-progress"]) == 0
    assert ad.read_h5ad(tmp_path / "e.h5ad").obsm["X_atacformer"].shape == (12, 32)


def test_evaluate_writes_json_and_markdown(tmp_path, capsys):
    adata = toy_adata()
    adata.obsm["X_truth"] = np.eye(3)[pd.factorize(adata.obs["cell_type"])[0]] + 0.01 * np.arange(90)[:, None]
    adata.write_h5ad(tmp_path / "a.h5ad")
    assert main(["evaluate", str(tmp_path / "a.h5ad"), "--batch-key", "donor", "--reference-batch", "d1",
                 "--rep", "truth=X_truth", "-o", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(res["metrics"]) == {"truth", "LSI", "spectral"}
    assert res["metrics"]["truth"]["ARI"] == 1.0 and res["metrics"]["truth"]["transfer_macro_F1"] == 1.0
    assert "spectral" in res["spectral_implementation"]
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert md.startswith("| method | ARI | NMI |") and "| truth | 1.000 |" in md
    assert main(["evaluate", str(tmp_path / "a.h5ad"), "--rep", "bad", "-o", str(tmp_path / "ev2")]) == 2


def test_regions_on_hg19_bins(tmp_path):
    genome = get_genome("hg19")
    bins = genome.bins(5000)
    genes = genome.genes()
    chr1 = genes[genes["chrom"] == "chr1"]
    tss_bins = np.unique(bins.bin_ids(np.zeros(40, int), chr1["tss"].to_numpy()[:40]))
    other = np.setdiff1d(np.arange(2000, 2400), np.unique(bins.bin_ids(np.zeros(len(chr1), int), chr1["tss"])))[:40]
    rng = np.random.default_rng(0)
    n = 40
    groups = np.repeat(["g1", "g2"], n // 2)
    X = sp.lil_matrix((n, bins.n_bins), dtype=np.float32)
    for i in range(n):
        pool = (np.concatenate([tss_bins[:20], other[:20]]) if groups[i] == "g1"
                else np.concatenate([tss_bins[20:], other[20:]]))
        X[i, rng.choice(pool, 25, replace=False)] = 1
    adata = ad.AnnData(X.tocsr(), obs=pd.DataFrame({"cell_type": groups}, index=[f"c{i}" for i in range(n)]),
                       var=bins.var())
    adata.uns.update(bins.uns())
    adata.write_h5ad(tmp_path / "a.h5ad")
    config = AtacformerConfig.from_preset("tiny", BinVocab(genome, 5000))
    Atacformer(config).save_pretrained(tmp_path / "model")
    assert main(["regions", "specific", str(tmp_path / "a.h5ad"), "--model", str(tmp_path / "model"),
                 "--groupby", "cell_type", "-o", str(tmp_path / "reg"), "--n-top", "10"]) == 0
    top = pd.read_csv(tmp_path / "reg" / "specific_regions.tsv", sep="\t")
    assert set(top["group"]) == {"g1", "g2"} and top["bin"].str.startswith("chr1:").all()
    assert top["promoter"].any()  # half of each group's bins hold a TSS
    cand = pd.read_csv(tmp_path / "reg" / "promoter_candidates.tsv", sep="\t")
    assert not cand["promoter"].any()
