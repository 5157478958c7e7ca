"""`atacformer demo --quick` end to end (the reduced CI mode): report sections, images, sane numbers,
the explanations, and the annotated cells written for scanpy."""

import json
import re

import anndata as ad

from atacformer.cli import main
from atacformer.demo.report import METRICS, SECTIONS


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quick"]) == 0
    err = capsys.readouterr().err
    assert "[demo 2/10] pretrain:" in err and "[demo 10/10] write: done in" in err  # a line per step
    assert "[demo 8/10] craft: done in" in err
    html = (out / "report.html").read_text()
    for term in METRICS:  # every metric is explained, with its direction
        assert f"<dt>{term}</dt>" in html
    assert "Fine-tuned head vs kNN transfer" in html and "LSI vs the integrated embedding" in html
    assert "6.000" not in html and html.count(">target</th>") == 1
    for section in SECTIONS:
        assert f">{section}</h2>" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 10
    for rel in images:
        png = out / rel
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 2000
    res = json.loads((out / "metrics.json").read_text())
    hem, pbs = res["hemato"]["metrics"], res["pbsmall"]["metrics"]
    assert set(pbs) == {"atacformer", "LSI", "spectral"}
    assert {"atacformer", "LSI", "spectral", "atacformer fine-tuned head", "atacformer integrated"} <= set(hem)
    for method in ("atacformer", "LSI", "spectral", "atacformer integrated"):
        row = hem[method]
        assert row["n_clusters"] == 6  # the protocol: as many clusters as labels, for every method
        assert -0.5 <= row["ARI"] <= 1 and 0 <= row["NMI"] <= 1
        for key in ("iLISI", "kBET", "batch_ASW", "celltype_ASW", "transfer_macro_F1"):
            assert 0 <= row[key] <= 1, (method, key)
    assert hem["spectral"]["ARI"] > 0.3  # the baselines work on the re-binned matrix
    assert 0 <= hem["atacformer fine-tuned head"]["transfer_macro_F1"] <= 1
    facts = res["hemato"]
    assert facts["n_cells"] == {"pbsmall": 150, "hemato": 600} and facts["quick"] is True
    assert set(facts["timings_s"]) >= {"ingest", "pretrain", "embed", "evaluate", "annotate", "integrate", "craft",
                                       "total"}
    craft = res["craft"]  # CRAFT beside its baselines, also as markdown
    assert {"CCA (ATAC LSI × RNA PCA)", "CRAFT"} <= set(craft["alignment"])
    assert 0 <= craft["alignment"]["CRAFT"]["FOSCTTM"] <= 1 and "CRAFT" in craft["labels"]
    assert "## imputation" in (out / "metrics_craft.md").read_text()
    assert "craft_joint_umap.png" in html and "craft_markers.png" in html
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "metrics_hemato.md").read_text().startswith("| method |")
    cells = ad.read_h5ad(out / "hemato.h5ad")
    assert {"X_atacformer", "X_lsi", "X_spectral", "X_atacformer_integrated", "X_umap", "X_umap_atacformer"} <= set(
        cells.obsm)
    assert {"cell_type", "donor", "leiden", "leiden_atacformer", "leiden_atacformer_integrated",
            "atacformer_label"} <= set(cells.obs)
    assert cells.uns["neighbors"]["connectivities_key"] == "connectivities" and "connectivities" in cells.obsp
    assert ad.read_h5ad(out / "pbsmall.h5ad").obs["leiden"].nunique() == 3
