"""Quality protocol of the downstream issue, on the shipped data (CPU, offline).

Runs the full ``atacformer demo`` (pretrain tiny on PBSmall + hemato without labels, embed, Leiden at
the label count for atacformer / LSI / spectral, annotation fine-tuned on donor BMMC_D6T1 and scored
on BMMC_D5T1, adversarial integration across donors) and prints the metrics tables and the targets.

    python benchmarks/evaluate.py [-o OUTDIR] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import pandas as pd

from atacformer.demo import DemoSettings, run_demo
from atacformer.demo.report import targets
from atacformer.metrics import to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="benchmark_evaluate", help="output folder")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, help="override the demo's pretraining steps")
    parser.add_argument("--finetune-epochs", type=int, help="override the demo's fine-tuning epochs")
    parser.add_argument("--integrate-epochs", type=int, help="override the demo's integration epochs")
    args = parser.parse_args()
    base = DemoSettings.quick(args.seed) if args.quick else DemoSettings(seed=args.seed)
    changes = {k: v for k, v in [("pretrain_steps", args.pretrain_steps), ("finetune_epochs", args.finetune_epochs),
                                 ("integrate_epochs", args.integrate_epochs)] if v is not None}
    settings = dataclasses.replace(base, **changes)
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    report = run_demo(args.output, quick=args.quick, seed=args.seed, settings=settings)
    wall = time.perf_counter() - t
    res = json.loads((Path(args.output) / "metrics.json").read_text())
    hem = pd.DataFrame(res["hemato"]["metrics"]).T
    pbs = pd.DataFrame(res["pbsmall"]["metrics"]).T
    print(f"settings: {res['hemato']['settings']}\n")
    print(f"## hemato (600 cells, 6 types, 2 donors), seed {args.seed}\n")
    print(to_markdown(hem))
    print("## PBSmall (150 cells, 3 types)\n")
    print(to_markdown(pbs))
    print("## targets\n")
    print(to_markdown(targets(hem), index_name="target"))
    print(f"spectral: {res['hemato']['spectral_implementation']}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res["hemato"]["timings_s"].items()))
    print(f"wall {wall:.0f} s; report {report}")


if __name__ == "__main__":
    main()
