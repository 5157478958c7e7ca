"""Realistic cell lengths (issue 12): pretrain + embed + cluster of simulated 10x-depth cells, as a user would.

    python benchmarks/realistic.py                      # 3,000 simulated cells (hg38), seeds 0 and 1
    python benchmarks/realistic.py --cells 600 --seeds 0 --skip-short

1. ``simulate_atlas.py --cells N`` (../shared/bench) → fragments + labels (cached in --workdir), then
   ``atacformer ingest`` → cells × 5 kb bins.
2. ``atacformer pretrain cells.h5ad -o model`` with the defaults, ``atacformer embed``, Leiden at the label
   count (fine types and lineages): wall time of the three on this machine, ARI/NMI, iLISI over libraries.
3. LSI and spectral on the same cells in the same run; embedding throughput (cells/s, forward only).
4. The same default recipe on the short-cell datasets: hemato (shipped) and SNARE-seq ATAC (coarse labels).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np

from atacformer.metrics import ari, ilisi, nmi
from atacformer.tl import cluster, lsi, spectral

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"


def run(cmd: list[str]) -> float:
    """Run a command, fail loudly, return its wall time."""
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def simulated(workdir: Path, n_cells: int) -> Path:
    """Ingested simulated atlas (cached)."""
    h5ad = workdir / f"atlas_{n_cells}.h5ad"
    if not h5ad.exists():
        frags, labels = workdir / f"atlas_{n_cells}.tsv.gz", workdir / f"atlas_{n_cells}_labels.tsv"
        if not frags.exists():
            run([sys.executable, str(SHARED / "bench" / "simulate_atlas.py"), "--cells", str(n_cells),
                 "--out", str(frags), "--labels", str(labels)])
        t = run([sys.executable, "-m", "atacformer", "ingest", str(frags), "--genome", "hg38", "--labels", str(labels),
                 "-o", str(h5ad)])
        print(f"ingest of {n_cells} simulated cells: {t:.0f} s")
    return h5ad


def scores(adata: ad.AnnData, rep: str, labels: dict[str, str], batch_key: str | None, seed: int) -> dict:
    """ARI/NMI at the label count for each label column, and iLISI over ``batch_key``."""
    out = {}
    for name, key in labels.items():
        k = adata.obs[key].nunique()
        cluster(adata, use_rep=rep, n_clusters=k, seed=seed, key_added="_cl")
        out[f"ARI_{name}"] = ari(adata.obs[key], adata.obs["_cl"])
        out[f"NMI_{name}"] = nmi(adata.obs[key], adata.obs["_cl"])
        out[f"clusters_{name}"] = int(adata.uns["_cl"]["n_clusters"])
    if batch_key is not None:
        out["iLISI"] = ilisi(np.asarray(adata.obsm[rep]), adata.obs[batch_key].astype(str))
    return out


def unlabelled(h5ad: Path) -> Path:
    """A copy of ``h5ad`` without its label columns: pretraining would otherwise train a supervised
    ``cell_type`` head (it uses the labels it finds), and the comparison with LSI/spectral is unsupervised."""
    out = h5ad.with_name(f"{h5ad.stem}_unlabelled.h5ad")
    if not out.exists():
        adata = ad.read_h5ad(h5ad)
        adata.obs = adata.obs.drop(columns=[c for c in ("cell_type", "cell_type_coarse", "lineage", "organ")
                                            if c in adata.obs])
        adata.write_h5ad(out)
    return out


def user_run(h5ad: Path, workdir: Path, seed: int) -> tuple[ad.AnnData, dict]:
    """``atacformer pretrain`` (defaults, on the cells without labels) + ``atacformer embed`` as a user runs
    them; wall times."""
    model, emb = workdir / f"model_{h5ad.stem}_s{seed}", workdir / f"emb_{h5ad.stem}_s{seed}.h5ad"
    t_pre = run([sys.executable, "-m", "atacformer", "pretrain", str(unlabelled(h5ad)), "-o", str(model),
                 "--seed", str(seed), "--overwrite", "--no-progress"])
    t_emb = run([sys.executable, "-m", "atacformer", "embed", str(model), str(h5ad), "-o", str(emb), "--overwrite",
                 "--no-progress"])
    return ad.read_h5ad(emb), {"pretrain_s": t_pre, "embed_s": t_emb, "model": model}


def throughput(adata: ad.AnnData, model_dir: Path, n: int = 200) -> float:
    """Cells per second of forward-only embedding (the default inference settings)."""
    from atacformer.models import Atacformer
    from atacformer.train.batcher import adata_cells, encode_cells

    model = Atacformer.from_pretrained(model_dir)
    cells = adata_cells(adata[:n], model)
    t = time.perf_counter()
    encode_cells(model, cells)
    return len(cells) / (time.perf_counter() - t)


def table(rows: dict[str, dict]) -> str:
    cols = sorted({c for r in rows.values() for c in r})
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                                 for c in cols) + " |")
    return "\n".join(lines)


def realistic(args) -> None:
    h5ad = simulated(args.workdir, args.cells)
    rows = {}
    for seed in args.seeds:
        emb, times = user_run(h5ad, args.workdir, seed)
        t = time.perf_counter()
        rows[f"atacformer seed {seed}"] = scores(emb, "X_atacformer", {"fine": "cell_type", "lineage": "lineage"},
                                                 "batch", seed)
        rows[f"atacformer seed {seed}"].update(
            wall_s=times["pretrain_s"] + times["embed_s"] + time.perf_counter() - t, pretrain_s=times["pretrain_s"],
            embed_s=times["embed_s"], cells_per_s=throughput(emb, times["model"]))
    base = ad.read_h5ad(h5ad)
    for name, fn in (("LSI", lsi), ("spectral", spectral)):
        t = time.perf_counter()
        fn(base, seed=0)
        rows[name] = scores(base, f"X_{name.lower()}", {"fine": "cell_type", "lineage": "lineage"}, "batch", 0)
        rows[name]["wall_s"] = time.perf_counter() - t
    med = int(np.median(np.diff(base.X.indptr)))
    print(f"\n## simulated atlas: {args.cells} cells, median {med} open bins per cell\n")
    print(table(rows))


def short_cells(args) -> None:
    """The default recipe on the short-cell datasets (hemato, SNARE-seq ATAC)."""
    from atacformer import datasets

    sets = {"hemato": (datasets.hemato(), "cell_type")}
    snare = SHARED / "data" / "snareseq_mouse_cortex_mm10" / "atac.h5ad"
    if snare.exists():
        from atacformer.io import read_region_matrix

        sets["snare"] = (read_region_matrix(snare, genome="mm10", bin_size=5000), "cell_type_coarse")
    for name, (adata, key) in sets.items():
        h5ad = args.workdir / f"{name}.h5ad"
        adata.write_h5ad(h5ad)
        rows = {}
        for seed in args.seeds:
            emb, times = user_run(h5ad, args.workdir, seed)
            rows[f"atacformer seed {seed}"] = {**scores(emb, "X_atacformer", {"labels": key}, None, seed),
                                               "pretrain_s": times["pretrain_s"]}
        for base, fn in (("LSI", lsi), ("spectral", spectral)):
            fn(adata, seed=0)
            rows[base] = scores(adata, f"X_{base.lower()}", {"labels": key}, None, 0)
        print(f"\n## {name}: {adata.n_obs} cells, labels {key}\n")
        print(table(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=3000)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--workdir", type=Path, default=Path("bench_realistic"))
    p.add_argument("--skip-short", action="store_true", help="only the simulated atlas")
    p.add_argument("--skip-atlas", action="store_true", help="only hemato and SNARE-seq")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_atlas:
        realistic(args)
    if not args.skip_short:
        short_cells(args)


if __name__ == "__main__":
    main()
