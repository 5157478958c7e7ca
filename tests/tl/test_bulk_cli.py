"""Region sets through the command line as a user would: a folder of BED files + a sample table → ingest →
finetune (two label columns) → annotate / embed; and the bad inputs."""

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atacformer.cli import main
from atacformer.models import Atacformer
from atacformer.tl import finetune

from .conftest import CHROM_SIZES, toy_model
from .test_bulk import ASSAYS, MAX_LENGTH, TYPES, write_sets


@pytest.fixture
def toy_sizes(tmp_path):
    path = tmp_path / "toy.chrom.sizes"
    path.write_text("".join(f"{c}\t{n}\n" for c, n in CHROM_SIZES.items()))
    return path


def _ingest(folder, sizes, out, **kw) -> int:
    paths, table = write_sets(folder, **kw)
    return main(["ingest", *map(str, paths), "--genome", str(sizes), "--sample-table", str(table), "-o", str(out)])


def test_cli_round_trip_with_two_label_columns(tmp_path, toy_sizes, capsys):
    assert _ingest(tmp_path / "ref", toy_sizes, tmp_path / "sets.h5ad", n_per_type=10) == 0
    assert _ingest(tmp_path / "new", toy_sizes, tmp_path / "new_sets.h5ad", n_per_type=4, seed=5) == 0
    toy_model(max_length=MAX_LENGTH).save_pretrained(tmp_path / "model")
    assert main(["finetune", str(tmp_path / "sets.h5ad"), "--model", str(tmp_path / "model"),
                 "--labels-key", "cell_type,assay", "--epochs", "30", "--lr", "3e-3",
                 "-o", str(tmp_path / "tuned")]) == 0
    assert "cell_type (3 classes), assay (2 classes)" in capsys.readouterr().out
    tuned = Atacformer.from_pretrained(tmp_path / "tuned")
    assert tuned.config.heads == {"cell_type": list(TYPES), "assay": list(ASSAYS)}
    assert main(["annotate", str(tmp_path / "new_sets.h5ad"), "--model", str(tmp_path / "tuned"), "--threshold", "0",
                 "-o", str(tmp_path / "out.h5ad")]) == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    for col in ("cell_type", "assay"):
        key = f"atacformer_label_{col}"
        assert {key, f"{key}_confidence"} <= set(out.obs.columns) and out.uns["atacformer_label"]["n_subsets"] == 8
        assert (out.obs[key].astype(str) == out.obs[col]).mean() >= 0.75, col  # chance 0.33 / 0.5
    assert main(["embed", str(tmp_path / "tuned"), str(tmp_path / "new_sets.h5ad"), "--n-subsets", "3",
                 "-o", str(tmp_path / "emb.h5ad")]) == 0
    emb = ad.read_h5ad(tmp_path / "emb.h5ad")
    assert emb.obsm["X_atacformer"].shape == (12, 32) and emb.uns["X_atacformer"]["n_subsets"] == 3


def test_bad_region_set_inputs(tmp_path, toy_sizes, capsys):
    paths, table = write_sets(tmp_path / "sets", n_per_type=2)
    # an empty BED file (headers only): the error names the file, nothing is written
    empty = tmp_path / "sets" / "empty.bed"
    empty.write_text("track name=nothing\n# no peaks\n")
    out = tmp_path / "x.h5ad"
    assert main(["ingest", *map(str, paths), str(empty), "--genome", str(toy_sizes), "-o", str(out)]) == 2
    assert re.search(r"empty\.bed: no (regions|records)", capsys.readouterr().err) and not out.exists()
    # a sample table that misses a file, or names a file that is not given
    rows = pd.read_csv(table, sep="\t")
    rows.iloc[1:].to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    assert main(["ingest", *map(str, paths), "--genome", str(toy_sizes), "--sample-table",
                 str(tmp_path / "short.tsv"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "short.tsv: no row for 1 of the 6 BED files" in err and rows["sample"][0] in err
    assert main(["ingest", *map(str, paths[:-1]), "--genome", str(toy_sizes), "--sample-table", str(table),
                 "-o", str(out)]) == 2
    assert f"1 rows name no input BED file: {rows['sample'].iloc[-1]}" in capsys.readouterr().err
    assert not out.exists()
    # a label column with one class
    args = ["ingest", *map(str, paths), "--genome", str(toy_sizes), "--sample-table", str(table), "-o", str(out)]
    assert main(args) == 0
    sets = ad.read_h5ad(out)
    sets.obs["assay"] = "atac"
    sets.write_h5ad(out)
    toy_model(max_length=MAX_LENGTH).save_pretrained(tmp_path / "model")
    assert main(["finetune", str(out), "--model", str(tmp_path / "model"), "--labels-key", "cell_type,assay",
                 "-o", str(tmp_path / "tuned")]) == 2
    assert "obs['assay'] needs at least two classes" in capsys.readouterr().err


def test_region_sets_on_another_genome_are_refused(tmp_path):
    other = tmp_path / "other.chrom.sizes"
    other.write_text("chr1\t250000\nchr2\t150000\n")
    paths, table = write_sets(tmp_path / "sets", n_per_type=2)
    assert main(["ingest", *map(str, paths), "--genome", str(other), "--sample-table", str(table),
                 "-o", str(tmp_path / "other.h5ad")]) == 0
    sets = ad.read_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(ValueError, match="genome 'other'.*'toy'"):
        finetune(sets, toy_model(max_length=MAX_LENGTH), labels_key="cell_type")


def test_hg19_bed_files_ingested_as_hg38_get_the_build_hint(tmp_path, capsys):
    """Peaks near the end of hg19 chr1 (249,250,621 bp) lie past hg38's chr1 end (248,956,422 bp)."""
    bed = tmp_path / "hg19_sample.bed"
    starts = np.arange(249_000_000, 249_200_000, 10_000)
    bed.write_text("".join(f"chr1\t{s}\t{s + 500}\n" for s in starts) + "chr2\t1000000\t1000500\n")
    assert main(["ingest", str(bed), "--genome", "hg38", "-o", str(tmp_path / "x.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "hg19_sample.bed" in err and "hg19" in err.replace("hg19_sample", "")
