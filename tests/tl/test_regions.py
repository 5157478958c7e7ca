import numpy as np
import pytest

from atacformer.genome import Genome
from atacformer.tl import (
    annotate_bins,
    region_embeddings,
    specific_regions,
    unannotated_promoters,
)

from .conftest import CHROM_SIZES


@pytest.fixture
def genome(tmp_path):
    # one TSS every 15 kb on chr1 (+ strand: TSS = start), none on chr2
    bed = "".join(f"chr1\t{s}\t{s + 3000}\tG{i}\t+\n" for i, s in enumerate(range(1000, 250_000, 15_000)))
    (tmp_path / "genes.bed").write_text(bed)
    return Genome.from_chrom_sizes(CHROM_SIZES, name="toy", genes=tmp_path / "genes.bed")


def test_annotate_bins_hand_case(genome):
    bins = genome.bins(5000)
    ann = annotate_bins(np.array([0, 1, 3, 50]), bins, genome.genes())
    # bin 0 [0,5000) holds G0's TSS 1000; bin 1 [5000,10000): G0 at 1000 is 4000 away, G1 at 16000 is 6001
    assert list(ann["promoter"]) == [True, False, True, False]
    assert list(ann["nearest_gene"][:3]) == ["G0", "G0", "G1"]
    assert ann["tss_distance"].iloc[1] == 4000 and np.isinf(ann["tss_distance"].iloc[3])  # chr2: no genes


def test_region_embeddings_shapes_and_counts(adata, model):
    out = region_embeddings(adata, model, groupby="cell_type", key_added="r", copy=True)
    assert "r" in out.uns and "r" not in adata.uns  # copy=True leaves the argument alone
    assert region_embeddings(adata, model, groupby="cell_type") is None
    reg = adata.uns["atacformer_regions"]
    np.testing.assert_array_equal(reg["counts"], out.uns["r"]["counts"])
    G, _, d = reg["embeddings"].shape
    assert (G, d) == (3, model.config.d_model)
    assert 0 not in reg["bin_ids"]  # bin 0 is never open
    # every open (cell, bin) pair is a token of the cell's sentence (short cells, no subsampling)
    assert reg["counts"].sum() == int((adata.X > 0).sum())
    np.testing.assert_array_equal(reg["embeddings"][reg["counts"] == 0], 0)


def test_specific_regions_find_each_types_block(adata, model, genome):
    region_embeddings(adata, model, groupby="cell_type")
    top = specific_regions(adata, genome=genome, n_top=5)
    assert set(top["group"]) == {"A", "B", "C"}
    for t, name in enumerate("ABC"):  # type t opens bins [20t, 20t+20)
        ids = top.loc[top["group"] == name, "bin_id"]
        assert ids.between(20 * t, 20 * t + 19).all()
    assert ({"nearest_gene", "tss_distance", "promoter"} <= set(top.columns)
            and list(top.columns)[:2] == ["group", "bin_id"])
    assert adata.uns["atacformer_specific_regions"] is top
    assert (top["log2fc"] > 0).all()


def test_unannotated_promoters(adata, model, genome):
    region_embeddings(adata, model, groupby="cell_type")
    cand = unannotated_promoters(adata, genome=genome, threshold=0.0)
    info = adata.uns["atacformer_promoter_candidates"]
    assert 0 <= info["auc"] <= 1 and info["n_promoter_bins"] > 5
    assert not cand["promoter"].any() and len(cand) == info["n_bins"] - info["n_promoter_bins"]
    assert cand["promoter_score"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="region_embeddings"):
        unannotated_promoters(adata, key="nope")
