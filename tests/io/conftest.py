import gzip

import pytest

from atacformer.genome import Genome


@pytest.fixture
def toy_genome(tmp_path):
    """chr1 (20 kb) and chr2 (12 kb) plus chrM; one + strand gene on chr1 with TSS at 10,000."""
    genes = tmp_path / "genes.bed"
    genes.write_text("chr1\t10000\t15000\tG1\t+\n")
    return Genome.from_chrom_sizes({"chr1": 20_000, "chr2": 12_000, "chrM": 16_000}, name="toy", genes=genes)


def write_fragments(path, rows, *, header="# toy\n"):
    """rows: (chrom, start, end, barcode, count) tuples; gzip if the name ends with .gz."""
    text = header + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path
