"""Write a sharded Parquet corpus from cells × bins AnnData / h5ad / fragment inputs, in bounded memory.

Data flow: each input (:mod:`.sources`) yields blocks of ``row_group_size`` cells → one Arrow table per
block (``bin_ids`` list column built straight from the CSR arrays, no per-cell Python loop) → appended
to the current shard's ``ParquetWriter`` as a row group; a new shard starts every ``cells_per_shard``
cells. At most one block of the count matrix is in memory at a time. Everything goes into a temporary
folder beside ``out_dir`` that is renamed into place at the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .._atomic import sweep_stale, temp_name, write_json
from .corpus import MANIFEST, CorpusInfo, ShardInfo
from .sentences import DEFAULT_MAX_LENGTH
from .sources import CellBlock, CellSource, open_sources
from .vocab import BinVocab

logger = logging.getLogger(__name__)

DEFAULT_OBS_COLUMNS = ("cell_type", "organ", "batch", "dataset")
DEFAULT_CELLS_PER_SHARD = 50_000
DEFAULT_ROW_GROUP_SIZE = 1024
# sorted bin ids compress ~3x with delta encoding + zstd
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": ["dataset"],
    "column_encoding": {"bin_ids.list.element": "DELTA_BINARY_PACKED"},
}


def _schema(label_columns: Sequence[str]) -> pa.Schema:
    fields = [
        pa.field("bin_ids", pa.list_(pa.int32())),
        pa.field("n_open", pa.int32()),
        pa.field("cell_id", pa.string()),
        *(pa.field(c, pa.string()) for c in label_columns),
    ]
    return pa.schema(fields)


def _strings(values: pd.Series) -> pa.Array:
    """Obs values as Arrow strings; NaN/None → null."""
    missing = values.isna().to_numpy()
    out = values.astype(str).to_numpy(dtype=object)
    out[missing] = None
    return pa.array(out, type=pa.string())


def block_table(block: CellBlock, dataset: str, label_columns: Sequence[str], schema: pa.Schema) -> pa.Table:
    """One Arrow table (a row group) from a block of cells."""
    X = block.X
    n = X.shape[0]
    bin_ids = pa.ListArray.from_arrays(pa.array(X.indptr.astype(np.int32)), pa.array(X.indices.astype(np.int32)))
    cols = {"bin_ids": bin_ids, "n_open": pa.array(np.diff(X.indptr).astype(np.int32)),
            "cell_id": pa.array(block.cell_ids.astype(object), type=pa.string())}
    for c in label_columns:
        if c in block.obs:
            cols[c] = _strings(block.obs[c])
        elif c == "dataset":
            cols[c] = pa.array([dataset] * n, type=pa.string())
        else:
            cols[c] = pa.nulls(n, type=pa.string())
    return pa.table(cols, schema=schema)


class ShardWriter:
    """Writes tables as row groups of exactly ``row_group_size`` rows (but the last of each shard) to
    ``shard-XXXXX.parquet`` files, rolling over every ``cells_per_shard`` rows.

    Holds fewer than ``row_group_size`` rows between calls (plus the table being written);
    ``max_rows_held`` records the most it ever held, to check the memory bound."""

    def __init__(self, directory: Path, schema: pa.Schema, *, cells_per_shard: int, row_group_size: int):
        self.directory, self.schema = directory, schema
        self.cells_per_shard, self.row_group_size = cells_per_shard, row_group_size
        self.shards: list[ShardInfo] = []
        self.max_rows_held = 0
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows = 0  # rows in the open shard

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._n_pending += table.num_rows
        self.max_rows_held = max(self.max_rows_held, self._n_pending)
        while self._n_pending and self._n_pending >= self._group_rows():
            self._flush(self._group_rows())

    def close(self) -> list[ShardInfo]:
        while self._n_pending:
            self._flush(min(self._n_pending, self._group_rows()))
        if self._writer is not None:
            self._close_shard()
        return self.shards

    def _group_rows(self) -> int:
        return min(self.row_group_size, self.cells_per_shard - self._rows)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` pending rows as one row group."""
        table = pa.concat_tables(self._pending)
        if self._writer is None:
            self._path = self.directory / f"shard-{len(self.shards):05d}.parquet"
            self._writer = pq.ParquetWriter(self._path, self.schema, **_PARQUET_OPTIONS)
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        rest = table.slice(n)
        self._pending, self._n_pending = ([rest] if rest.num_rows else []), rest.num_rows
        self._rows += n
        if self._rows == self.cells_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        self._writer.close()
        meta = pq.read_metadata(self._path)
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        self.shards.append(ShardInfo(self._path.name, meta.num_rows, groups))
        self._writer, self._rows = None, 0


class _Stats:
    """Label vocabularies and exact medians (via histograms, so memory does not grow with cells)."""

    def __init__(self, label_columns: Sequence[str], n_bins: int):
        self.labels: dict[str, set[str]] = {c: set() for c in label_columns}
        self.n_open_hist = np.zeros(n_bins + 1, dtype=np.int64)

    def add(self, table: pa.Table) -> None:
        for c, seen in self.labels.items():
            seen.update(v for v in table.column(c).unique().to_pylist() if v is not None)
        self.n_open_hist += np.bincount(table.column("n_open").to_numpy(), minlength=len(self.n_open_hist))

    def median_n_open(self) -> float:
        return _hist_median(self.n_open_hist)

    def median_sentence_length(self, vocab: BinVocab, max_length: int) -> float:
        n_open = np.arange(len(self.n_open_hist))
        length = 1 + vocab.n_chroms + np.minimum(n_open, max_length - 1 - vocab.n_chroms)
        return _hist_median(np.bincount(length, weights=self.n_open_hist))


def _hist_median(hist: np.ndarray) -> float:
    """Median of the values ``v`` counted ``hist[v]`` times (mean of the two middle ones)."""
    total = int(hist.sum())
    if total == 0:
        return 0.0
    cum = np.cumsum(hist)
    lo = int(np.searchsorted(cum, (total - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, total // 2 + 1))
    return (lo + hi) / 2


def _label_columns(sources: list[CellSource], obs_columns: Sequence[str]) -> list[str]:
    """``dataset`` then each requested obs column that at least one input has."""
    present = {k for s in sources for k in s.obs_keys}
    return ["dataset"] + [c for c in dict.fromkeys(obs_columns) if c != "dataset" and c in present]


def write_corpus(
    inputs,
    out_dir: str | Path,
    *,
    genome=None,
    bin_size: int | None = None,
    obs_columns: Sequence[str] = DEFAULT_OBS_COLUMNS,
    cells_per_shard: int = DEFAULT_CELLS_PER_SHARD,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> CorpusInfo:
    """Write a sharded Parquet corpus of cells from one or many inputs, in bounded memory.

    ``inputs``: an AnnData, an h5ad path or a fragment file, a list of them, or a ``{name: input}``
    dict. AnnData/h5ad inputs are cells × bins matrices made by ``atacformer ingest`` (``uns``
    genome/bin_size/chrom_sizes, bins as ``var``); h5ad files are streamed ``row_group_size`` cells at a
    time. Fragment files are binned with :func:`atacformer.io.read_fragments` on ``genome``/``bin_size``.
    All inputs must share genome and bin size. ``cells_per_shard`` is rounded up to a multiple of
    ``row_group_size`` so that all row groups (the units the dataset splits) are the same size but
    the corpus's last one. ``obs_columns`` are copied as string labels (missing →
    null); ``dataset`` is the input's name unless its obs has a ``dataset`` column. ``max_length`` and
    ``seed`` are recorded for deriving sentences (see :mod:`atacformer.tokenize.corpus`).

    Returns the :class:`CorpusInfo` also written to ``out_dir/corpus.json``."""
    if cells_per_shard < 1 or row_group_size < 1:
        raise ValueError(f"cells_per_shard and row_group_size must be ≥ 1, got {cells_per_shard}, {row_group_size}")
    if isinstance(obs_columns, str):
        obs_columns = [obs_columns]
    row_group_size = min(row_group_size, cells_per_shard)
    cells_per_shard = -(-cells_per_shard // row_group_size) * row_group_size  # whole row groups
    out = Path(out_dir)
    if out.exists() and not (overwrite and out.is_dir()):
        raise ValueError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    sources = open_sources(inputs, genome=genome, bin_size=bin_size)
    vocab = BinVocab.from_bins(sources[0].bins)
    if max_length <= 1 + vocab.n_chroms:
        raise ValueError(f"max_length={max_length} leaves no room for bins ({1 + vocab.n_chroms} special tokens)")
    label_columns = _label_columns(sources, obs_columns)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    try:
        info = _write(sources, tmp, out, vocab, label_columns, cells_per_shard=cells_per_shard,
                      row_group_size=row_group_size, max_length=max_length, seed=seed, progress=progress)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d cells in %d shards to %s", info.n_cells, len(info.shards), out)
    return info


def _write(sources, tmp: Path, out: Path, vocab: BinVocab, label_columns, *, cells_per_shard, row_group_size,
           max_length, seed, progress) -> CorpusInfo:
    schema = _schema(label_columns)
    writer = ShardWriter(tmp, schema, cells_per_shard=cells_per_shard, row_group_size=row_group_size)
    stats = _Stats(label_columns, vocab.n_bins)
    datasets: dict[str, int] = {}
    known = [s.n_cells for s in sources]
    total = None if None in known else sum(known)  # fragment files: cell count unknown until read
    with tqdm(total=total, unit="cells", desc="tokenize", disable=not progress) as bar:
        for source in sources:
            datasets[source.name] = 0
            for block in source.blocks(row_group_size):
                table = block_table(block, source.name, label_columns, schema)
                writer.write(table)
                stats.add(table)
                bar.update(table.num_rows)
                datasets[source.name] += table.num_rows
    shards = writer.close()
    n_cells = sum(s.n_rows for s in shards)
    if n_cells == 0:
        raise ValueError("the inputs hold no cells: nothing to write")
    vocab.save(tmp)
    info = CorpusInfo(
        path=out, genome=vocab.genome.name, bin_size=vocab.bin_size, n_cells=n_cells, shards=tuple(shards),
        columns=tuple(schema.names), obs_columns=tuple(label_columns),
        labels={c: sorted(v) for c, v in stats.labels.items()}, datasets=datasets,
        max_length=max_length, seed=seed, median_n_open=stats.median_n_open(),
        median_sentence_length=stats.median_sentence_length(vocab, max_length),
    )
    write_json(tmp / MANIFEST, info.to_dict(), indent=1)
    return info


def _sibling(out: Path, kind: str) -> Path:
    """A new empty hidden folder beside ``out`` (same file system, so renames are atomic)."""
    sweep_stale(out)  # folders left by killed runs
    path = temp_name(out, f".{kind}")
    path.mkdir()
    return path


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to ``out`` (replacing an old corpus there, if any)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old / out.name)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
