"""The demo's CRAFT section in its quick mode: figures written, CRAFT rows beside the baselines."""

import numpy as np

from atacformer.datasets import snareseq
from atacformer.demo.craft import CraftDemoSettings, craft_section
from atacformer.io.regions import read_region_matrix


def test_craft_section_quick(tmp_path):
    regions, rna = snareseq(bin_size=None)
    test = regions.obs["batch"].isin(["09G", "09H"]).to_numpy()
    rng = np.random.default_rng(0)
    pick = np.sort(np.r_[rng.choice(np.flatnonzero(~test), 150, replace=False),
                         rng.choice(np.flatnonzero(test), 60, replace=False)])
    atac = read_region_matrix(regions[pick], genome="mm10")
    section = craft_section(atac, rna[pick].copy(), tmp_path, settings=CraftDemoSettings.quick())
    for name in ("joint_umap", "markers"):
        path = section["figures"][name]
        assert path.exists() and path.stat().st_size > 10_000
    tables = section["tables"]
    assert set(tables) == {"alignment", "imputation", "labels"}
    assert list(tables["alignment"].index) == ["CCA (ATAC LSI × RNA PCA)", "gene activity in RNA PCA", "CRAFT"]
    assert {"CRAFT head", "CRAFT joint kNN (50 nearest training RNA)"} <= set(tables["imputation"].index)
    assert "CRAFT" in tables["labels"].index
    assert 0 <= tables["alignment"].loc["CRAFT", "FOSCTTM"] <= 1
    assert section["info"]["n_train"] == 150 and section["info"]["n_test"] == 60
