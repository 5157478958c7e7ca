"""``atacformer craft train | embed | impute | transfer`` round trip on 120 shipped SNARE-seq cells (peaks in)."""

import anndata as ad
import numpy as np
import torch

from atacformer._snareseq import snareseq
from atacformer.cli import main
from atacformer.models import Atacformer, AtacformerConfig
from atacformer.tokenize.vocab import BinVocab


def test_craft_cli_round_trip(tmp_path, capsys):
    regions, rna = snareseq(bin_size=None)
    pick = np.random.default_rng(1).choice(regions.n_obs, 120, replace=False)
    atac_path, rna_path = tmp_path / "atac_peaks.h5ad", tmp_path / "rna.h5ad"
    regions[pick].copy().write_h5ad(atac_path)
    rna[pick].copy().write_h5ad(rna_path)
    torch.manual_seed(0)
    Atacformer(AtacformerConfig.from_preset("tiny", BinVocab("mm10"))).save_pretrained(tmp_path / "enc")
    model = str(tmp_path / "craft")
    train = ["craft", "train", "--atac", str(atac_path), "--rna", str(rna_path), "--model", str(tmp_path / "enc"),
             "-o", model, "--steps", "2", "--batch-size", "16", "--likelihood", "poisson"]
    assert main(train) == 0
    assert "poisson imputation" in capsys.readouterr().out
    assert main(train) == 2 and "already exists" in capsys.readouterr().err  # no silent overwrite
    assert main(train + ["--overwrite"]) == 0

    out = tmp_path / "atac_emb.h5ad"
    assert main(["craft", "embed", model, str(atac_path), "--modality", "atac", "-o", str(out)]) == 0
    emb = ad.read_h5ad(out)
    assert emb.obsm["X_craft"].shape == (120, 128) and emb.n_vars == regions.n_vars  # the input, plus obsm
    assert main(["craft", "embed", model, str(rna_path), "--modality", "rna", "-o", str(tmp_path / "r.h5ad")]) == 0
    assert "0 set to 0" in capsys.readouterr().out

    imputed_path = tmp_path / "imputed.h5ad"
    assert main(["craft", "impute", model, str(atac_path), "-o", str(imputed_path)]) == 0
    imputed = ad.read_h5ad(imputed_path)
    genes = ad.read_h5ad(rna_path).var_names
    assert list(imputed.obs_names) == list(rna.obs_names[pick]) and set(imputed.var_names) <= set(genes)
    before = imputed_path.stat().st_mtime_ns
    assert main(["craft", "impute", model, str(atac_path), "-o", str(imputed_path)]) == 2
    assert imputed_path.stat().st_mtime_ns == before

    out = tmp_path / "transfer.h5ad"
    assert main(["craft", "transfer", model, "--reference", str(rna_path), "--labels-key", "cell_type",
                 "--query", str(atac_path), "-o", str(out), "--threshold", "0"]) == 0
    labelled = ad.read_h5ad(out)
    assert set(labelled.obs["craft_label"].astype(str)) <= set(rna.obs["cell_type"].astype(str))
    assert labelled.obs["craft_confidence"].between(0, 1).all()
    assert main(["craft", "transfer", model, "--reference", str(rna_path), "--labels-key", "nope",
                 "--query", str(atac_path), "-o", str(tmp_path / "t2.h5ad")]) == 2
    assert "no 'nope' column" in capsys.readouterr().err and not (tmp_path / "t2.h5ad").exists()
