"""``atacformer pretrain --dna-table``: a k-mer table from ``atacformer dna-embed`` on a tiny genome is
aligned to the vocabulary, saved with the model, restored by ``from_pretrained`` and used by ``embed``."""

import anndata as ad
import numpy as np
import pytest
import torch

from atacformer.cli import main
from atacformer.dna import DNAEmbeddingTable
from atacformer.genome import Genome
from atacformer.models import Atacformer, AtacformerConfig, collate_cells
from atacformer.tokenize import BinVocab

from .conftest import TOY_SIZES, toy_adata

PRETRAIN = ["--preset", "tiny", "--set", "n_layers=1", "--set", "dropout=0.0", "--max-steps", "2", "--batch-size", "8",
            "--workers", "0", "--accelerator", "cpu", "--no-progress", "--ckpt-every", "10"]


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """(cells .h5ad, k-mer DNA table dir) on the toy genome (chr1 600 kb, chr2 400 kb, 5 kb bins)."""
    d = tmp_path_factory.mktemp("dna_cli")
    sizes = d / "toy.chrom.sizes"  # genome name "toy", as in toy_adata
    sizes.write_text("".join(f"{c}\t{n}\n" for c, n in TOY_SIZES.items()))
    rng = np.random.default_rng(0)
    with open(d / "toy.fa", "w") as fh:
        for chrom, n in TOY_SIZES.items():
            seq = "".join(rng.choice(list("ACGT"), size=n))
            fh.write(f">{chrom}\n" + "".join(seq[i:i + 80] + "\n" for i in range(0, n, 80)))
    assert main(["dna-embed", "--genome", str(sizes), "--fasta", str(d / "toy.fa"), "--dim", "8",
                 "-o", str(d / "table")]) == 0
    cells = d / "cells.h5ad"
    toy_adata(24, genome=Genome.from_chrom_sizes(TOY_SIZES, name="toy")).write_h5ad(cells)
    return cells, d / "table"


def test_pretrain_with_dna_table_saves_loads_and_embeds(tmp_path, toy_files):
    cells, table_dir = toy_files
    model_dir = tmp_path / "model"
    assert main(["pretrain", str(cells), "--dna-table", str(table_dir), *PRETRAIN, "-o", str(model_dir)]) == 0

    model = Atacformer.from_pretrained(model_dir).eval()
    table = DNAEmbeddingTable.load(table_dir)
    expected = torch.from_numpy(table.aligned(model.vocab))  # (V, 8), zero rows for special tokens
    assert model.config.dna_dim == 8
    torch.testing.assert_close(model.encoder.embed.dna, expected, rtol=0, atol=0)
    assert expected[model.bin_offset:].abs().sum(1).gt(0).all()  # every bin has sequence

    out = tmp_path / "embedded.h5ad"
    assert main(["embed", str(model_dir), str(cells), "-o", str(out), "--key-added", "X_af", "--no-progress"]) == 0
    emb = ad.read_h5ad(out).obsm["X_af"]
    adata = ad.read_h5ad(cells)
    batch = collate_cells([{"bin_ids": adata.X[i].indices} for i in range(adata.n_obs)], model.vocab, mask_fraction=0.0)
    with torch.no_grad():
        direct = model.embed(batch).numpy()
        model.encoder.embed.dna.zero_()
        without_dna = model.embed(batch).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5, rtol=0)
    assert not np.allclose(direct, without_dna, atol=1e-3)  # the table changes the embedding


def test_save_and_load_round_trip_a_model_with_a_dna_table(tmp_path, toy_vocab_dna):
    vocab, dna = toy_vocab_dna
    torch.manual_seed(0)
    config = AtacformerConfig.from_preset("tiny", vocab, n_layers=1, dropout=0.0, dna_dim=dna.shape[1])
    model = Atacformer(config, dna_embeddings=dna).eval()
    loaded = Atacformer.from_pretrained(model.save_pretrained(tmp_path / "m")).eval()
    assert loaded.config.dna_dim == 4
    torch.testing.assert_close(loaded.encoder.embed.dna, model.encoder.embed.dna, rtol=0, atol=0)
    batch = collate_cells([{"bin_ids": np.arange(0, 200, 7)}, {"bin_ids": np.arange(3, 150, 2)}], vocab,
                          mask_fraction=0.0)
    with torch.no_grad():
        assert torch.equal(model.embed(batch, pooling="mean"), loaded.embed(batch, pooling="mean"))
        assert torch.equal(model(batch).loss, loaded(batch).loss)


@pytest.fixture
def toy_vocab_dna():
    vocab = BinVocab(Genome.from_chrom_sizes(TOY_SIZES, name="toy"), 5000)
    dna = torch.randn(len(vocab), 4)
    dna[: vocab.bin_offset] = 0.0
    return vocab, dna


@pytest.mark.parametrize(("meta", "message"), [({"genome": "hg19", "bin_size": 5000}, "genome 'hg19'"),
                                               ({"genome": "toy", "bin_size": 10000}, "10000 bp bins")])
def test_pretrain_rejects_a_table_for_another_genome_or_bin_size(tmp_path, toy_files, capsys, meta, message):
    cells, _ = toy_files
    names = [f"chr1:{s}-{s + 5000}" for s in range(0, 600_000, 5000)]
    bad = DNAEmbeddingTable(np.ones((len(names), 4), dtype=np.float32), names, meta).save(tmp_path / "bad")
    assert main(["pretrain", str(cells), "--dna-table", str(bad), *PRETRAIN, "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_pretrain_rejects_conflicting_dna_dim_and_missing_table(tmp_path, toy_files, capsys):
    cells, table_dir = toy_files
    assert main(["pretrain", str(cells), "--dna-table", str(table_dir), "--set", "dna_dim=16", *PRETRAIN,
                 "-o", str(tmp_path / "m")]) == 2
    assert "dna_dim=16" in capsys.readouterr().err
    assert main(["pretrain", str(cells), "--dna-table", str(tmp_path / "nope"), *PRETRAIN,
                 "-o", str(tmp_path / "m")]) == 2
    assert "nope" in capsys.readouterr().err
