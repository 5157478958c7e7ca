"""`atacformer demo --quick` end to end (the reduced CI mode): report sections, images, sane numbers."""

import json
import re

from atacformer.cli import main
from atacformer.tl.demo_report import SECTIONS


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quick"]) == 0
    html = (out / "report.html").read_text()
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
    assert set(facts["timings_s"]) >= {"ingest", "pretrain", "embed", "evaluate", "annotate", "integrate", "total"}
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "metrics_hemato.md").read_text().startswith("| method |")
