"""Training curves from the CSV logs (all versions of a run, so resumed runs plot as one curve)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .._atomic import atomic_path


def read_metrics(log_dir: str | Path) -> pd.DataFrame:
    """All ``metrics.csv`` rows under ``log_dir`` (one row per step; a later version wins on overlap)."""
    frames = []
    for i, path in enumerate(sorted(Path(log_dir).glob("version_*/metrics.csv"),
                                    key=lambda p: int(p.parent.name.split("_")[-1]))):
        df = pd.read_csv(path)
        df["version"] = i
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["step"])
    df = pd.concat(frames, ignore_index=True)
    df = df.groupby(["step", "version"], as_index=False).first()  # merge train/val rows of a step
    return df.sort_values(["step", "version"]).drop_duplicates("step", keep="last").reset_index(drop=True)


def plot_training_curve(log_dir: str | Path, path: str | Path) -> Path | None:
    """Plot every ``train/*loss*`` and ``val/loss`` column against the step into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = read_metrics(log_dir)
    columns = [c for c in df.columns if "loss" in c and (c.startswith("train/") or c == "val/loss")]
    if not columns:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in columns:
        rows = df[["step", c]].dropna()
        ax.plot(rows["step"], rows[c], label=c, marker="o" if c.startswith("val/") else None, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)
