"""Small side tables: barcode → label tables, barcode whitelists, sample tables."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .fragments import open_binary


def _sep(path: Path) -> str:
    return "," if path.name.endswith((".csv", ".csv.gz")) else "\t"


def read_table(table: str | os.PathLike | pd.DataFrame, *, key: str, what: str) -> pd.DataFrame:
    """A table indexed by its ``key`` column (or first column) as strings; duplicate keys are an error."""
    if isinstance(table, pd.DataFrame):
        df, name = table.copy(), f"{what} table"
        if key in df.columns:
            df = df.set_index(key)
    else:
        path = Path(table)
        if not path.exists():
            raise FileNotFoundError(f"{what} table not found: {path}")
        name = str(path)
        df = pd.read_csv(path, sep=_sep(path), dtype=str, comment=None)
        if df.shape[1] < 2:
            raise ValueError(f"{path}: a {what} table needs a header and at least 2 columns ({key}, ...)")
        df = df.set_index(key if key in df.columns else df.columns[0])
    df.index = df.index.astype(str)
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise ValueError(f"{name}: duplicate {df.index.name or key} {dup[0]!r} ({len(dup)} duplicates)")
    df.index.name = key
    return df


def read_labels(labels: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """barcode → label columns (tsv/csv with a header; the ``barcode`` column or the first one is the key)."""
    return read_table(labels, key="barcode", what="labels")


def read_whitelist(whitelist: str | os.PathLike | Iterable[str] | None) -> set[str] | None:
    """Barcodes from a file (one per line, optionally gzipped; first column used) or an iterable."""
    if whitelist is None:
        return None
    if isinstance(whitelist, (str, os.PathLike)):
        path = Path(whitelist)
        if not path.exists():
            raise FileNotFoundError(f"barcode whitelist not found: {path}")
        with open_binary(path) as fh:
            out = {line.split(b"\t")[0].split(b",")[0].strip().decode() for line in fh if line.strip()}
        out.discard("barcode")
        if not out:
            raise ValueError(f"{path}: barcode whitelist is empty")
        return out
    return {str(b) for b in whitelist}
