import json

import numpy as np

from atacformer.cli import main
from atacformer.dna import DNAEmbeddingTable, kmer_embed


def test_dna_embed_kmer_cli(toy, tmp_path, capsys):
    genome, fasta, seqs = toy
    sizes = fasta.parent / "toy.chrom.sizes"
    out = tmp_path / "table"
    rc = main(["dna-embed", "--genome", str(sizes), "--fasta", str(fasta), "--method", "kmer", "--dim", "24",
               "--bin-size", "1000", "--dtype", "float32", "-o", str(out)])
    assert rc == 0 and "43 bins × 24" in capsys.readouterr().out
    table = DNAEmbeddingTable.load(out)
    assert json.loads((out / "meta.json").read_text())["genome"] == "toy"
    assert np.allclose(table.embeddings[30], kmer_embed(seqs["chr2"][7000:8000], dim=24)[0], atol=1e-5)


def test_dna_embed_nt_cli_and_errors(toy, tiny_nt, tmp_path, capsys):
    genome, fasta, _ = toy
    sizes = str(fasta.parent / "toy.chrom.sizes")
    rc = main(["dna-embed", "--genome", sizes, "--fasta", str(fasta), "--method", "nt", "--model", str(tiny_nt),
               "--bin-size", "1000", "--device", "cpu", "-o", str(tmp_path / "nt")])
    assert rc == 0 and DNAEmbeddingTable.load(tmp_path / "nt").dim == 16
    assert main(["dna-embed", "--genome", sizes, "--fasta", str(fasta), "--method", "nt",
                 "-o", str(tmp_path / "x")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["dna-embed", "--genome", "hg38", "--fasta", str(fasta), "-o", str(tmp_path / "y")]) == 2
    assert "another assembly" in capsys.readouterr().err
