"""Training curves from the CSV logs (all versions of a run, so resumed runs plot as one curve)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


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
    from ..pl import training_curves

    df = read_metrics(log_dir)
    columns = [c for c in df.columns if "loss" in c and (c.startswith("train/") or c == "val/loss")]
    if not columns:
        return None
    training_curves(df[["step", *columns]], x="step", title="pretraining", show=False, save=path)
    return Path(path)
