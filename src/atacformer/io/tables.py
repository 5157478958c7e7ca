"""Small side tables: barcode → label tables, barcode whitelists, sample tables."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .fragments import open_binary

logger = logging.getLogger(__name__)
_BARCODE = re.compile(r"([^#]*#)?[ACGTN]{8,}([-_.]\w+)?")  # 10x-like, optionally sample#-prefixed


def _first_line(path: Path) -> list[str]:
    with open_binary(path) as fh:
        for raw in fh:
            if raw.strip():
                return raw.decode("utf-8", "replace").rstrip("\r\n").split(_sep(path))
    return []


def _sep(path: Path) -> str:
    return "," if path.name.endswith((".csv", ".csv.gz")) else "\t"


def read_table(table: str | os.PathLike | pd.DataFrame, *, key: str, what: str, known=None) -> pd.DataFrame:
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
        df = _read_file(path, key=key, what=what, known=known)
    df.index = df.index.astype(str).str.strip()
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise ValueError(f"{name}: duplicate {df.index.name or key} {dup[0]!r} ({len(dup)} duplicates)")
    df.index.name = key
    return df


def _read_file(path: Path, *, key: str, what: str, known=None) -> pd.DataFrame:
    """The table at ``path``; a first line whose first field is a barcode (10x-like, or one of ``known``)
    is data, not a header."""
    first = _first_line(path)
    head = first[0].strip() if first else ""
    headerless = what == "labels" and bool(first) and (
        _BARCODE.fullmatch(head) is not None or (known is not None and head in known))
    if headerless:
        names = [key] + ["label"] + [f"label_{i}" for i in range(2, len(first))]
        logger.warning("%s: the first line (%r) is a barcode, not a header: read without a header, columns %s",
                       path, first[0], ", ".join(names))
        df = pd.read_csv(path, sep=_sep(path), dtype=str, comment=None, header=None, names=names)
    else:
        df = pd.read_csv(path, sep=_sep(path), dtype=str, comment=None)
    if df.shape[1] < 2:
        raise ValueError(f"{path}: a {what} table needs a header and at least 2 columns ({key}, ...)")
    df.columns = [str(c).strip() for c in df.columns]
    return df.set_index(key if key in df.columns else df.columns[0])


def read_labels(labels: str | os.PathLike | pd.DataFrame, *, known=None) -> pd.DataFrame:
    """barcode → label columns (tsv/csv with a header; the ``barcode`` column or the first one is the key).
    A table without a header (first line ``AAACGAAAGACAGCCT-1<TAB>B cell``) is recognised by its barcode
    and read with columns ``barcode``, ``label`` (``label_2``, …), as is one whose first field is in
    ``known`` (the barcodes of the data, a set or Index). Barcodes are stripped of white space."""
    return read_table(labels, key="barcode", what="labels", known=known)


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
