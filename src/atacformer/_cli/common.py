"""Helpers shared by the subcommands: refusing to replace an existing output unless ``--overwrite``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_overwrite(parser: argparse.ArgumentParser, what: str = "output") -> None:
    """Add ``--overwrite`` (default off: an existing output is an error)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def check_output(path: str | Path, overwrite: bool, *, what: str = "output") -> Path:
    """Raise ``ValueError`` if ``path`` exists and ``overwrite`` is false. Nothing is deleted here: with
    ``overwrite`` the writer replaces the old output only once the new one is complete."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        kind = "folder" if path.is_dir() else "file"
        raise ValueError(f"{path}: {what} {kind} already exists; pass --overwrite to replace it")
    return path


def remove_output(path: str | Path) -> None:
    """Delete an existing output file or folder (for writers that cannot replace it atomically)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
