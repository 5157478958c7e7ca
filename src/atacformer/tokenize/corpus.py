"""The on-disk corpus: a folder of Parquet shards plus ``vocab.json`` and the ``corpus.json`` manifest.

Layout::

    corpus/
      corpus.json              manifest: genome, bin size, shards + row counts, columns, label vocabularies
      vocab.json               the BinVocab (genome, bin size, token layout)
      shard-00000.parquet      one row per cell (row groups of ``row_group_size`` cells)
      ...

Row schema: ``bin_ids`` (list<int32>: *all* the cell's open global bin ids, in genomic order),
``n_open`` (int32), ``cell_id`` (string), ``dataset`` (string: the input's name, or its
``obs['dataset']``), then one string column per requested ``obs`` column (null when missing).

The full open-bin list is stored, not the truncated sentence, so the pretraining collator can mask or
subsample and knows which bins it removed. A cell's sentence tokens are derived from it with
:func:`~atacformer.tokenize.cell_sentence` (``max_length`` and ``seed`` are recorded in the manifest;
row ``r`` of the corpus uses ``rng=np.random.default_rng([seed, r])``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .vocab import BinVocab

MANIFEST = "corpus.json"
FORMAT = "atacformer-corpus"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One Parquet shard: its file name (relative to the corpus), cells and row-group sizes."""

    path: str
    n_rows: int
    row_groups: tuple[int, ...]


@dataclass(frozen=True)
class CorpusInfo:
    """Summary of a written corpus (what ``corpus.json`` holds)."""

    path: Path
    genome: str
    bin_size: int
    n_cells: int
    shards: tuple[ShardInfo, ...]
    columns: tuple[str, ...]
    obs_columns: tuple[str, ...]
    labels: dict[str, list[str]]
    datasets: dict[str, int]
    max_length: int
    seed: int
    median_n_open: float
    median_sentence_length: float

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "genome": self.genome,
            "bin_size": self.bin_size,
            "n_cells": self.n_cells,
            "shards": [{"path": s.path, "n_rows": s.n_rows, "row_groups": list(s.row_groups)} for s in self.shards],
            "columns": list(self.columns),
            "obs_columns": list(self.obs_columns),
            "labels": self.labels,
            "datasets": self.datasets,
            "max_length": self.max_length,
            "seed": self.seed,
            "median_n_open": self.median_n_open,
            "median_sentence_length": self.median_sentence_length,
        }

    @classmethod
    def from_dict(cls, meta: dict, path: Path) -> CorpusInfo:
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / MANIFEST}: not an atacformer corpus manifest")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path / MANIFEST}: corpus format version {meta.get('version')}, "
                             f"this atacformer reads version {FORMAT_VERSION}")
        shards = tuple(ShardInfo(s["path"], int(s["n_rows"]), tuple(s["row_groups"])) for s in meta["shards"])
        return cls(
            path=path, genome=meta["genome"], bin_size=int(meta["bin_size"]), n_cells=int(meta["n_cells"]),
            shards=shards, columns=tuple(meta["columns"]), obs_columns=tuple(meta["obs_columns"]),
            labels={k: list(v) for k, v in meta["labels"].items()}, datasets=dict(meta["datasets"]),
            max_length=int(meta["max_length"]), seed=int(meta["seed"]),
            median_n_open=float(meta["median_n_open"]), median_sentence_length=float(meta["median_sentence_length"]),
        )


class Corpus:
    """A corpus folder written by :func:`~atacformer.tokenize.write_corpus`.

    >>> corpus = Corpus("corpus/")
    >>> len(corpus), corpus.label_names("cell_type")[:2]
    (1200, ['01_HSC', '05_CMP.LMPP'])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no corpus manifest (write one with atacformer tokenize)")
        try:
            meta = json.loads(manifest.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{manifest}: corrupt manifest ({err})") from None
        self.info = CorpusInfo.from_dict(meta, self.path)

    def __len__(self) -> int:
        return self.info.n_cells

    def __repr__(self) -> str:
        return (f"Corpus({str(self.path)!r}, n_cells={len(self)}, shards={len(self.shards)}, "
                f"genome={self.info.genome!r}, bin_size={self.info.bin_size})")

    @property
    def shards(self) -> list[Path]:
        return [self.path / s.path for s in self.info.shards]

    @property
    def obs_columns(self) -> tuple[str, ...]:
        """The label columns (``dataset`` first, then the requested obs columns that were found)."""
        return self.info.obs_columns

    def label_names(self, column: str) -> list[str]:
        """Sorted distinct values of a label column: label ``i`` of the dataset is ``label_names(column)[i]``."""
        if column not in self.info.labels:
            raise KeyError(f"corpus has no label column {column!r}; it has {sorted(self.info.labels)}")
        return self.info.labels[column]

    def vocab(self) -> BinVocab:
        return BinVocab.load(self.path, genome=self.info.genome, bin_size=self.info.bin_size)

    def to_pandas(self, *, max_cells: int = 1_000_000) -> pd.DataFrame:
        """The whole corpus as one DataFrame (``bin_ids`` as int32 arrays), for small corpora only."""
        if len(self) > max_cells:
            raise ValueError(f"corpus has {len(self)} cells (> max_cells={max_cells}); stream it with CorpusDataset")
        frames = [pq.read_table(p).to_pandas() for p in self.shards]
        if not frames:
            return pd.DataFrame(columns=list(self.info.columns))
        df = pd.concat(frames, ignore_index=True)
        df["bin_ids"] = [np.asarray(b, dtype=np.int32) for b in df["bin_ids"]]
        return df

    def row_group_units(self) -> list[tuple[int, int, int, int]]:
        """``(shard, row_group, first_row, n_rows)`` for every row group, in corpus order
        (``first_row`` = the corpus-wide index of its first cell)."""
        units, first = [], 0
        for si, shard in enumerate(self.info.shards):
            for gi, n in enumerate(shard.row_groups):
                units.append((si, gi, first, n))
                first += n
        return units
