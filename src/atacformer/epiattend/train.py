"""Training, saving/loading and per-gene prediction for EpiAttend (a plain PyTorch loop: the models are
small enough for one device; the ``base`` preset wants a GPU)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._atomic import atomic_path
from .config import EpiAttendConfig
from .data import EpiData
from .model import EpiAttend
from .windows import WindowDataset, centered_windows

log = logging.getLogger(__name__)


def loss_fn(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse_log1p") -> torch.Tensor:
    """``mse_log1p``: MSE between log1p(pred) and log1p(target); ``poisson``: Poisson NLL on rates.

    NaN targets are missing (e.g. every bin but the TSS bins of per-gene targets) and ignored.
    """
    if kind not in ("mse_log1p", "poisson"):
        raise ValueError(f"unknown loss {kind!r}; use 'mse_log1p' or 'poisson'")
    seen = ~torch.isnan(target)
    if not seen.any():
        return pred.sum() * 0.0  # nothing observed in this batch
    pred, target = pred[seen], target[seen]
    if kind == "mse_log1p":
        return F.mse_loss(torch.log1p(pred), torch.log1p(target))
    return F.poisson_nll_loss(pred, target, log_input=False)


@dataclass
class TrainResult:
    """Loss per step and validation loss per evaluation."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)


def _inputs(model: EpiAttend, batch: dict, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    seq = batch["seq"].to(device) if model.cfg.uses_sequence else None
    epi = batch["epi"].to(device) if model.cfg.uses_epigenome else None
    return seq, epi


@torch.no_grad()
def evaluate(model: EpiAttend, ds: WindowDataset, *, batch_size: int = 16, loss: str = "mse_log1p") -> float:
    """Mean loss over a dataset (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for batch in DataLoader(ds, batch_size=batch_size):
        pred = model(*_inputs(model, batch, device))
        total += loss_fn(pred, batch["target"].to(device), loss).item() * len(pred)
        n += len(pred)
    return total / max(n, 1)


def fit(
    model: EpiAttend,
    train: WindowDataset,
    *,
    valid: WindowDataset | None = None,
    steps: int = 500,
    batch_size: int = 8,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup: int = 50,
    loss: str = "mse_log1p",
    eval_every: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """AdamW with linear warm-up and cosine decay for ``steps`` optimizer steps over shuffled samples."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    result, step = TrainResult(), 0
    bar = tqdm(total=steps, disable=not progress, desc="epiattend")
    while step < steps:
        for batch in DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True):
            model.train()
            pred = model(*_inputs(model, batch, device))  # (B, T, N)
            value = loss_fn(pred, batch["target"].to(device), loss)
            opt.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            result.train_loss.append(value.item())
            step += 1
            bar.update(1)
            if valid is not None and (step % eval_every == 0 or step == steps):
                result.valid_loss.append(evaluate(model, valid, loss=loss))
                log.info("step %d train %.4f valid %.4f", step, value.item(), result.valid_loss[-1])
            if step >= steps:
                break
    bar.close()
    model.eval()
    return result


@torch.no_grad()
def predict_genes(
    model: EpiAttend, data: EpiData, genes: pd.DataFrame, *, batch_size: int = 16, target: int = 0
) -> pd.DataFrame:
    """Predicted vs observed value at each gene's TSS bin, per cell type, from a window centred on the
    TSS. ``genes`` needs ``gene, chrom, tss``. Returns a long table ``gene, cell_type, observed, predicted``."""
    cfg = model.cfg
    model.eval()
    device = next(model.parameters()).device
    windows = centered_windows(genes.chrom, genes.tss, seq_len=cfg.seq_len, bin_size=data.bin_size)
    ds = WindowDataset(data, windows, seq_len=cfg.seq_len)  # uncropped targets: index by position
    centre = cfg.n_positions // 2
    pred, obs = [], []
    for batch in DataLoader(ds, batch_size=batch_size):
        y = model(*_inputs(model, batch, device))  # (B, T, N)
        pred.append(y[:, target, centre - cfg.crop].cpu().numpy())
        if "target" in batch:
            obs.append(batch["target"][:, target, centre].numpy())
    n_ct = len(data.cell_types)
    out = pd.DataFrame({
        "gene": np.repeat(genes.gene.to_numpy(), n_ct),
        "cell_type": np.tile(data.cell_types, len(genes)),
        "predicted": np.concatenate(pred),
    })
    if obs:
        out.insert(2, "observed", np.concatenate(obs))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def save_model(model: EpiAttend, outdir: str | Path, *, meta: dict | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``meta.json`` (cell types, channels, ...) atomically."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, write in (
        ("config.json", lambda p: model.cfg.save(p)),
        ("model.safetensors", lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p))),
        ("meta.json", lambda p: Path(p).write_text(json.dumps(meta or {}, indent=2))),
    ):
        with atomic_path(out / name) as tmp:
            write(tmp)
    return out


def load_model(path: str | Path) -> tuple[EpiAttend, dict]:
    """Inverse of :func:`save_model`: (model in eval mode, meta dict)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not an EpiAttend model folder (no config.json)")
    model = EpiAttend(EpiAttendConfig.load(path / "config.json"))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
    return model.eval(), meta


def train_on_chromosomes(
    data: EpiData,
    cfg: EpiAttendConfig,
    *,
    valid: list[str],
    test: list[str],
    windows: pd.DataFrame | None = None,
    steps: int = 500,
    batch_size: int = 4,
    lr: float = 2e-3,
    loss: str = "mse_log1p",
    seed: int = 0,
    progress: bool = False,
) -> tuple[EpiAttend, TrainResult]:
    """Build and train a model on every chromosome except ``valid`` and ``test``.

    Training windows tile the training chromosomes (stride = the output span, jittered by up to half
    of it) unless ``windows`` (e.g. from a BED) are given; augmentation: ±3 bp DNA shifts and reverse
    complement. Samples group all cell types of a window so the sequence trunk runs once per window.
    """
    from .windows import split_chromosomes, tile_windows

    if cfg.epi_channels != len(data.channels) and cfg.uses_epigenome:
        raise ValueError(f"config has epi_channels={cfg.epi_channels} but the data has {len(data.channels)} channels")
    split = split_chromosomes(data.chroms, valid=valid, test=test)
    stride = cfg.n_out * data.bin_size
    if windows is None:
        train_w = tile_windows(data.genome.chrom_sizes, split["train"], seq_len=cfg.seq_len, stride=stride)
    else:
        train_w = windows[windows.chrom.isin(split["train"])]
    if len(train_w) == 0:
        raise ValueError("no training windows on the training chromosomes")
    train_ds = WindowDataset(data, train_w, seq_len=cfg.seq_len, crop=cfg.crop, max_shift=3, rc=True,
                             jitter_bins=cfg.n_out // 2, group_cells=True, seed=seed)
    valid_ds = None
    if split["valid"]:
        valid_w = tile_windows(data.genome.chrom_sizes, split["valid"], seq_len=cfg.seq_len, stride=stride)
        valid_ds = WindowDataset(data, valid_w, seq_len=cfg.seq_len, crop=cfg.crop, group_cells=True)
    torch.manual_seed(seed)
    model = EpiAttend(cfg)
    log.info("EpiAttend %s (%s): %d parameters, %d training windows", cfg.mode, cfg.seq_len, model.n_params(),
             len(train_w))
    result = fit(model, train_ds, valid=valid_ds, steps=steps, batch_size=batch_size, lr=lr, loss=loss, seed=seed,
                 eval_every=max(steps // 5, 1), progress=progress)
    return model, result
