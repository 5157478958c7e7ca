"""Training windows, chromosome hold-out splits and augmentation (DNA shift, reverse complement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .data import EpiData, one_hot, reverse_complement_codes


def tile_windows(chrom_sizes: dict[str, int], chroms: list[str], *, seq_len: int, stride: int,
                 bin_size: int = 128) -> pd.DataFrame:
    """Bin-aligned windows ``(chrom, start)`` tiling each chromosome every ``stride`` bp.

    The first window starts ``seq_len // 2 - stride // 2`` bp before the chromosome so that, with a
    stride equal to the output span, every base lands in some window's (cropped) output centre.
    """
    rows = []
    for chrom in chroms:
        first = -((seq_len // 2 - stride // 2) // bin_size) * bin_size
        for start in range(first, chrom_sizes[chrom] - seq_len // 2, stride):
            rows.append((chrom, start))
    return pd.DataFrame(rows, columns=["chrom", "start"])


def centered_windows(chroms: pd.Series, positions: pd.Series, *, seq_len: int, bin_size: int = 128) -> pd.DataFrame:
    """Windows whose centre position (index ``P // 2``) holds each given bp position."""
    p = seq_len // bin_size
    start = (positions.to_numpy(np.int64) // bin_size - p // 2) * bin_size
    return pd.DataFrame({"chrom": chroms.to_numpy(), "start": start})


def read_bed_windows(path: str | Path, *, seq_len: int, bin_size: int = 128) -> pd.DataFrame:
    """Windows centred on the midpoints of the regions of a BED file (parsed by :func:`read_regions`)."""
    from .inputs import read_regions

    regions = read_regions(path)
    mid = (regions["start"] + regions["end"]) // 2
    return centered_windows(regions.chrom, mid, seq_len=seq_len, bin_size=bin_size)


def split_chromosomes(chroms: list[str], *, valid: list[str], test: list[str]) -> dict[str, list[str]]:
    """Chromosome hold-out: ``{"train": rest, "valid": valid, "test": test}`` (disjoint, all known)."""
    unknown = [c for c in [*valid, *test] if c not in chroms]
    if unknown:
        raise ValueError(f"hold-out chromosome(s) {unknown} not among {chroms}")
    if set(valid) & set(test):
        raise ValueError(f"chromosome(s) {sorted(set(valid) & set(test))} are in both valid and test")
    return {"train": [c for c in chroms if c not in valid and c not in test], "valid": list(valid), "test": list(test)}


class WindowDataset(Dataset):
    """Samples ``(window, cell type)``: ``{"seq": (L, 4), "epi": (E, P), "target": (T, P)}`` tensors,
    with targets cropped to the model's output positions ``(T, N)`` when ``crop`` is given. With
    ``group_cells=True`` a sample is a window with all its cell types: epi (C, E, P), target (C, T, N),
    so the model runs the sequence trunk once for all of them.

    Augmentation (training only): ``max_shift`` moves the DNA by up to that many bp (tracks stay), and
    ``rc`` reverse-complements the DNA while flipping epigenome tracks and targets along positions,
    each with probability 1/2. ``jitter_bins`` moves the whole window by whole bins.
    """

    def __init__(
        self,
        data: EpiData,
        windows: pd.DataFrame,
        *,
        seq_len: int,
        crop: int = 0,
        cell_types: list[int] | None = None,
        max_shift: int = 0,
        rc: bool = False,
        jitter_bins: int = 0,
        group_cells: bool = False,
        seed: int = 0,
    ):
        self.data, self.windows = data, windows.reset_index(drop=True)
        self.seq_len, self.crop = seq_len, crop
        self.cells = list(range(len(data.cell_types))) if cell_types is None else list(cell_types)
        self.max_shift, self.rc, self.jitter = max_shift, rc, jitter_bins
        self.group = group_cells
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.windows) * (1 if self.group else len(self.cells))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        w, cell = (i, None) if self.group else divmod(i, len(self.cells))
        chrom, start = self.windows.loc[w, "chrom"], int(self.windows.loc[w, "start"])
        if self.jitter:
            start += int(self.rng.integers(-self.jitter, self.jitter + 1)) * self.data.bin_size
        shift = int(self.rng.integers(-self.max_shift, self.max_shift + 1)) if self.max_shift else 0
        cells = self.cells if self.group else [self.cells[cell]]
        parts = [self.data.window(chrom, start, self.seq_len, c, shift=shift) for c in cells]
        s = {"codes": parts[0]["codes"], "epi": np.stack([p["epi"] for p in parts])}  # epi (C, E, P)
        if "target" in parts[0]:
            s["target"] = np.stack([p["target"] for p in parts])  # (C, T, P)
        if self.rc and self.rng.random() < 0.5:
            s = reverse_complement_sample(s)
        squeeze = (lambda a: a) if self.group else (lambda a: a[0])
        out = {"seq": torch.from_numpy(one_hot(s["codes"])),
               "epi": torch.from_numpy(np.ascontiguousarray(squeeze(s["epi"])))}
        if "target" in s:
            t = s["target"][..., self.crop : s["target"].shape[-1] - self.crop]
            out["target"] = torch.from_numpy(np.ascontiguousarray(squeeze(t)))
        return out


def reverse_complement_sample(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reverse-complement the DNA and flip tracks/targets along positions (strand-symmetric signals)."""
    out = {"codes": reverse_complement_codes(s["codes"]), "epi": s["epi"][..., ::-1].copy()}
    if "target" in s:
        out["target"] = s["target"][..., ::-1].copy()
    return out
