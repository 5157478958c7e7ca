"""What an input is (fragments, BED/narrowPeak or a region matrix), decided from its content, not its name;
and piped inputs (``/dev/stdin``, ``<(zcat …)``) copied to a temporary file so they can be read twice.

Text files are told apart by their first records (up to :data:`SNIFF_RECORDS`): fragments have 4 or 5
columns (``chrom, start, end, barcode[, count]``) whose 4th column is barcode-like (a run of ≥ 8
A/C/G/T, or names repeating over the rows) and whose 5th is a positive integer; BED files have 3 or ≥ 6
columns, or a 4th column of unique region names (or ``.``); only when the records cannot tell (a few
rows with unique names) does a file name containing "fragment" decide. HDF5 files (h5ad or 10x ``.h5``) are
recognised by their signature, folders are MatrixMarket matrices.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._atomic import spill_dir
from .fragments import open_binary

logger = logging.getLogger(__name__)

KINDS = ("fragments", "bed", "matrix")
SNIFF_RECORDS = 20000
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_BARCODE = re.compile(rb"[ACGTN]{8,}")


def is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _records(path: Path) -> list[list[bytes]]:
    """The first data records of a text file, split on tabs."""
    out: list[list[bytes]] = []
    try:
        with open_binary(path) as fh:
            for raw in fh:
                if not raw.strip() or raw.startswith((b"#", b"track", b"browser")):
                    continue
                out.append(raw.rstrip(b"\r\n").split(b"\t"))
                if len(out) >= SNIFF_RECORDS:
                    break
    except (EOFError, OSError) as err:
        raise ValueError(f"{path}: truncated or corrupt compressed file ({err})") from None
    return out


def _text_kind(path: Path, records: list[list[bytes]]) -> tuple[str, str]:
    """(kind, why) of a text file from its first records."""
    if not records:
        raise ValueError(f"{path}: no records (empty or header-only file), cannot tell what it is")
    first = records[0]
    n = len(first)
    if n < 3 or not (first[1].strip().isdigit() and first[2].strip().isdigit()):
        shown = b"\t".join(first)[:120]
        raise ValueError(f"{path}: not a fragments, BED or region-matrix file (first record {shown!r}: "
                         "need chrom, start, end, ...)")
    if n == 3 or n >= 6:
        return "bed", f"{n} columns"
    names = [r[3].strip() for r in records if len(r) > 3]
    if n == 5 and not all(r[4].strip().isdigit() for r in records if len(r) == 5):
        return "bed", "5th column is not a read count"
    if sum(bool(_BARCODE.search(x)) for x in names) > len(names) / 2:
        return "fragments", f"{n} columns, barcode-like 4th column"
    real = [x for x in names if x not in (b".", b"")]
    if len(real) >= 20 and len(set(real)) <= len(real) / 2:
        return "fragments", f"{n} columns, 4th column repeats (barcodes, {len(set(real))} in {len(real)} rows)"
    if "fragment" in path.name.lower():  # the content cannot tell (few rows, unique names): the name can
        return "fragments", f"{n} columns, named like a fragments file"
    return "bed", f"{n} columns, 4th column holds region names"


def detect_kind(path: str | os.PathLike, *, explain: bool = False) -> str | tuple[str, str]:
    """``fragments``, ``bed`` or ``matrix``, from the file's content (see the module docstring).
    With ``explain=True`` returns ``(kind, why)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir():
        kind, why = "matrix", "a folder (MatrixMarket)"
    elif is_hdf5(path):
        kind, why = "matrix", "an HDF5 file (h5ad or 10x .h5)"
    else:
        kind, why = _text_kind(path, _records(path))
    return (kind, why) if explain else kind


def check_kind(kind: str | None) -> str | None:
    if kind not in (None, "auto", *KINDS):
        raise ValueError(f"input type must be one of auto, {', '.join(KINDS)}; got {kind!r}")
    return None if kind == "auto" else kind


def input_kind(paths: list[Path], kind: str | None = None) -> str:
    """The one kind of all ``paths`` (detected unless ``kind`` forces it); logs what was detected."""
    kind = check_kind(kind)
    if kind is not None:
        logger.info("input type: %s (forced)", kind)
    else:
        found = {p: detect_kind(p, explain=True) for p in paths}
        kinds = {k for k, _ in found.values()}
        if len(kinds) > 1:
            listed = ", ".join(f"{p} ({k})" for p, (k, _) in found.items())
            raise ValueError(f"inputs mix file types: {listed}; ingest one type at a time (or pass --input-type)")
        kind = kinds.pop()
        logger.info("input type: %s (detected: %s)", kind, found[paths[0]][1])
    if kind == "matrix" and len(paths) > 1:
        raise ValueError("give one region matrix at a time")
    return kind


def is_pipe(path: Path) -> bool:
    """True for inputs that can be read only once (FIFOs, /dev/stdin, process substitution)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def spooled(paths: list[Path]) -> Iterator[list[Path]]:
    """``paths`` with every piped input copied to a temporary file (removed afterwards). Error messages
    about a copy name the original input."""
    if not any(is_pipe(p) for p in paths):
        yield paths
        return
    folder = spill_dir("pipe")
    try:
        out = []
        for i, p in enumerate(paths):
            if is_pipe(p):
                copy = folder / str(i) / (p.name or "stdin")  # same name: same sample name
                copy.parent.mkdir()
                with open(p, "rb") as src, open(copy, "wb") as dst:
                    shutil.copyfileobj(src, dst, 8 << 20)
                p = copy
            out.append(p)
        try:
            yield out
        except (ValueError, OSError) as err:
            msg = str(err)
            for orig, copy in zip(paths, out, strict=False):
                msg = msg.replace(str(copy), str(orig))
            if msg == str(err):
                raise
            raise type(err)(msg) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
