"""Region-class sizes of the built-in genomes (bins per class, 5 kb bins) and the time to annotate.

For each genome and a few ``min_fraction`` values (the bin rule of :mod:`atacformer.pp.region_classes`)
prints bins per class and their share, and the seconds one ``region_classes`` call takes (the first
per genome includes reading the shipped runs).

    python benchmarks/region_classes.py [--bin-size 5000]
"""

from __future__ import annotations

import argparse
import time

from atacformer.pp import region_classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-size", type=int, default=5000)
    args = parser.parse_args()
    for name in ("hg38", "hg19", "mm10"):
        for min_fraction in (0.0, 0.1, 0.5):
            t0 = time.perf_counter()
            classes = region_classes(name, args.bin_size, min_fraction=min_fraction)
            seconds = time.perf_counter() - t0
            counts = classes.value_counts(sort=False)
            cells = "  ".join(f"{c} {n:,} ({n / len(classes):.1%})" for c, n in counts.items())
            print(f"{name} min_fraction={min_fraction}: {len(classes):,} bins in {seconds:.2f} s | {cells}")


if __name__ == "__main__":
    main()
