"""Build a genome-wide DNA embedding table: resumable, in shards of bins, with a progress bar.

Layout of ``out/`` while building::

    build.json              the settings (a rerun with other settings is refused)
    shards/000000000.npy    rows of bins [0, shard_size), written atomically; finished shards are skipped

and once every shard is done it becomes a table directory (``embeddings.npy``, ``bins.txt``,
``meta.json``; see :mod:`atacformer.dna.formats`) and the shards are removed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..genome import DEFAULT_BIN_SIZE, Genome, get_genome
from .fasta import GenomeFasta
from .formats import atomic_path, sidecars, write_npy, write_text
from .kmer import KmerEmbedder
from .nt import NTEmbedder
from .table import DNAEmbeddingTable

log = logging.getLogger(__name__)

DEFAULT_DIM = 256
DEFAULT_SHARD_SIZE = {"kmer": 16384, "nt": 1024}
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class NTOptions:
    """Options of the Nucleotide Transformer method: bins per forward pass, torch device (default: cuda if
    available), and whether a model folder shipping its own Python code may be loaded (runs that code)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    device: str | None = None
    trust_remote_code: bool = False


def make_embedder(method: str, *, model: str | Path | None = None, dim: int | None = None, seed: int = 0,
                  nt: NTOptions | None = None):
    """A :class:`KmerEmbedder` or :class:`NTEmbedder` from the build options."""
    if method == "kmer":
        if model is not None:
            raise ValueError("--model is for --method nt; the k-mer method needs no model")
        return KmerEmbedder(dim or DEFAULT_DIM, seed=seed)
    if method == "nt":
        if model is None:
            raise ValueError("--method nt needs --model LOCAL_NT_DIR (a saved Nucleotide Transformer checkpoint); "
                             "without one use --method kmer")
        nt = nt or NTOptions()
        emb = NTEmbedder(model, device=nt.device, batch_size=nt.batch_size, trust_remote_code=nt.trust_remote_code)
        if dim is not None and dim != emb.dim:
            raise ValueError(f"{model}: the NT model gives {emb.dim}-d embeddings, not dim={dim}; leave dim unset")
        return emb
    raise ValueError(f"unknown method {method!r}: use 'kmer' or 'nt'")


def _settings(embedder, genome: Genome, bin_size: int, dtype: str, shard_size: int) -> dict:
    settings = {"method": embedder.method, "genome": genome.name, "bin_size": bin_size, "dim": embedder.dim,
                "dtype": dtype, "shard_size": shard_size, "chrom_sizes": dict(genome.chrom_sizes),
                **embedder.metadata}
    if embedder.method == "nt":
        settings["model_path"] = str(Path(embedder.model_dir).resolve())
    return settings


def _check_settings(path: Path, settings: dict, keys) -> None:
    saved = json.loads(path.read_text())
    diff = [k for k in keys if saved.get(k) != settings.get(k)]
    if diff:
        raise ValueError(f"{path}: {path.parent} holds a table built with other settings "
                         f"({', '.join(f'{k}={saved.get(k)!r}' for k in diff)}); use another output or delete it")


def build_table(
    genome: str | Genome,
    fasta: str | Path,
    *,
    out: str | Path,
    method: str = "kmer",
    model: str | Path | None = None,
    dim: int | None = None,
    bin_size: int = DEFAULT_BIN_SIZE,
    dtype: str = "float16",
    shard_size: int | None = None,
    seed: int = 0,
    nt: NTOptions | None = None,
) -> DNAEmbeddingTable:
    """Embed every bin of ``genome`` from ``fasta`` into the table directory ``out`` and return it loaded.

    ``method="kmer"`` (default, ``dim`` default 256, ~10k bins/s per core) or ``"nt"`` (``model`` = a
    local NT directory; dim = the model's hidden size; ``nt`` = :class:`NTOptions`). Rows are stored as
    ``dtype`` (float16 halves the size). Interrupted builds resume: finished shards of ``shard_size`` bins
    are skipped. A complete table already at ``out`` is loaded (if its settings match)."""
    genome = get_genome(genome)
    bins = genome.bins(bin_size)
    dtype = str(np.dtype(dtype))
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype}")
    out = Path(out)
    if out.suffix:
        raise ValueError(f"{out}: the output of a build is a table directory; give a path without a suffix")
    fa = GenomeFasta(fasta, bins)
    embedder = make_embedder(method, model=model, dim=dim, seed=seed, nt=nt)
    embedder.check_bin_size(bins.bin_size)
    shard_size = int(shard_size or DEFAULT_SHARD_SIZE[method])
    settings = _settings(embedder, genome, bins.bin_size, dtype, shard_size)
    _, names_path, meta_path = sidecars(out)
    if meta_path.exists():
        _check_settings(meta_path, settings, ("method", "genome", "bin_size", "dim", "dtype", "source_model"))
        log.info("%s is already complete; loading it", out)
        return DNAEmbeddingTable.load(out)
    starts = _embed_shards(out, fa, embedder, bins, settings)
    _assemble(out, starts, out / "shards", bins.n_bins, embedder.dim, dtype)
    write_text(names_path, "\n".join(bins.names()) + "\n")
    meta = {k: v for k, v in settings.items() if k != "shard_size"} | {"n_bins": bins.n_bins}
    write_text(meta_path, json.dumps(meta, indent=2))  # last: marks the table complete
    shutil.rmtree(out / "shards")
    (out / "build.json").unlink()
    log.info("wrote %s (%d bins × %d, %s)", out, bins.n_bins, embedder.dim, dtype)
    return DNAEmbeddingTable.load(out)


def _embed_shards(out: Path, fa: GenomeFasta, embedder, bins, settings: dict) -> range:
    """Write every missing shard ``out/shards/<start>.npy``; returns the shard starts."""
    shard_size, dtype = settings["shard_size"], settings["dtype"]
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    build_json = out / "build.json"
    if build_json.exists():
        _check_settings(build_json, settings, list(settings))
    else:
        write_text(build_json, json.dumps(settings, indent=2))
    starts = range(0, bins.n_bins, shard_size)
    todo = [s for s in starts if not (shard_dir / f"{s:09d}.npy").exists()]
    if len(todo) < len(starts):
        log.info("resuming %s: %d of %d shards already done", out, len(starts) - len(todo), len(starts))
    done_bins = bins.n_bins - sum(min(s + shard_size, bins.n_bins) - s for s in todo)
    with tqdm(total=bins.n_bins, initial=done_bins, unit="bin", desc=f"dna-embed {settings['method']}",
              disable=None) as bar:
        for start in todo:
            rows = []
            for _, n, seq in fa.bins_region(start, min(start + shard_size, bins.n_bins)):
                rows.append(embedder.embed_region(seq, bins.bin_size))  # (n, dim)
                bar.update(n)
            write_npy(shard_dir / f"{start:09d}.npy", np.concatenate(rows).astype(dtype))
    fa.close()
    return starts


def _assemble(out: Path, starts, shard_dir: Path, n_bins: int, dim: int, dtype: str) -> None:
    """Concatenate the shards into ``out/embeddings.npy`` (written through a memory map, atomically)."""
    rows_path = sidecars(out)[0]
    with atomic_path(rows_path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_bins, dim))  # (B, dim)
        for start in starts:
            shard = np.load(shard_dir / f"{start:09d}.npy")
            arr[start : start + len(shard)] = shard
        arr.flush()
        del arr
