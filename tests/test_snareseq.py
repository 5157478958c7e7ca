"""The shipped SNARE-seq paired data and its loader."""

import numpy as np

from atacformer._snareseq import snareseq


def test_snareseq_is_paired_and_binned_without_losing_counts():
    atac, rna = snareseq()
    regions, _ = snareseq(bin_size=None)
    assert atac.n_obs == rna.n_obs == regions.n_obs == 6968 and rna.n_vars == 1677
    assert list(atac.obs_names) == list(rna.obs_names)
    assert atac.uns["genome"] == "mm10" and atac.uns["bin_size"] == 5000 and regions.n_vars == 25734
    assert atac.X.dtype == rna.X.dtype == np.int32
    assert np.array_equal(np.asarray(atac.X.sum(1)).ravel(), np.asarray(regions.X.sum(1)).ravel())
    assert sorted(atac.obs["batch"].unique()) == [f"09{c}" for c in "ABCDEFGH"]
    assert atac.obs["cell_type"].nunique() == 23 and atac.obs["cell_type_coarse"].nunique() == 15
    assert {"chr", "start", "end", "linked_gene"} <= set(regions.var.columns)
