import anndata as ad
import numpy as np

from atacformer.cli import main

from .conftest import write_fragments


def test_ingest_demo_then_info(tmp_path, capsys):
    out = tmp_path / "pbsmall.h5ad"
    assert main(["ingest", "--demo", "-o", str(out)]) == 0
    a = ad.read_h5ad(out)
    assert a.n_obs == 150 and a.uns["genome"] == "hg19" and a.uns["bin_size"] == 5000
    assert a.obs["cell_type"].value_counts().to_dict() == {"B": 50, "Monocyte": 50, "T": 50}
    assert int(a.X.sum()) == 2 * 29399  # every fragment on chr5/chr11: two insertions each
    assert np.all(a.obs["tss_enrichment"] > 1)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "150 cells" in text and "hg19" in text and "tss_enrichment" in text


def test_ingest_errors_exit_2_and_leave_nothing(tmp_path, toy_genome, capsys):
    sizes = tmp_path / "toy.chrom.sizes"
    sizes.write_text("chr1\t20000\nchr2\t12000\n")
    frags = write_fragments(tmp_path / "x_fragments.tsv", [("chr9", 1, 50, "A", 1)])
    out = tmp_path / "o.h5ad"
    assert main(["ingest", str(frags), "--genome", str(sizes), "-o", str(out), "--min-fragments", "0"]) == 2
    assert "no contig is a chromosome" in capsys.readouterr().err
    assert not out.exists()
    good = write_fragments(tmp_path / "y_fragments.tsv", [("chr1", 1, 50, "A", 1), ("chr2", 1, 50, "A", 1)])
    assert main(["ingest", str(good), "--genome", str(sizes), "--bin-size", "1000", "--counting", "fragment",
                 "--min-fragments", "0", "-o", str(out)]) == 0
    assert int(ad.read_h5ad(out).X.sum()) == 2
