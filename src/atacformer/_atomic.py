"""Atomic file writes: every output goes to a temporary file in the destination folder and is renamed
into place only when complete, so an error never leaves a half-written file behind.

Temporaries are named ``.<name>.<pid>.<hex><suffix>`` (beside the output) and spill folders
``atacformer-<kind>-<pid>-<random>`` (in the temporary folder): the process id lets a later run remove
what a killed process (SIGKILL, power loss) left behind, see :func:`sweep_stale`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LEGACY_AGE_S = 3600  # temporaries without a process id (older versions) are stale after an hour
_PID_NAME = re.compile(r"\.(\d+)\.[0-9a-f]{8}(\.|$)")
_LEGACY_NAME = re.compile(r"\.[0-9a-f]{8}\.(tmp|old)$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def temp_name(path: str | Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden temporary path beside ``path``: ``.<name>.<pid>.<hex><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _stale(p: Path, pid: int | None) -> bool:
    if pid is not None:
        return not pid_alive(pid)
    try:
        return time.time() - p.stat().st_mtime > LEGACY_AGE_S
    except OSError:
        return False


def sweep_stale(path: str | Path) -> int:
    """Remove temporaries of ``path`` (``.<name>.*``) left by processes that are no longer running.
    Returns how many were removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    n = 0
    for p in path.parent.glob(f".{glob_escape(path.name)}.*"):
        rest = p.name[len(path.name) + 1 :]
        m = _PID_NAME.match(rest)
        if m is None and not _LEGACY_NAME.match(rest):
            continue
        if _stale(p, int(m.group(1)) if m else None):
            _remove(p)
            n += 1
    return n


def glob_escape(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def spill_dir(kind: str, tmp_dir: str | Path | None = None) -> Path:
    """A new temporary folder ``atacformer-<kind>-<pid>-<random>``, after sweeping dead processes' ones."""
    base = Path(tmp_dir or tempfile.gettempdir())
    pattern = re.compile(rf"atacformer-{kind}-(\d+)-")
    for p in base.glob(f"atacformer-{kind}-*"):
        m = pattern.match(p.name)
        if p.is_dir() and _stale(p, int(m.group(1)) if m else None):
            shutil.rmtree(p, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"atacformer-{kind}-{os.getpid()}-", dir=base))


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (ending in ``suffix``, for writers that infer the format
    from the extension); ``os.replace`` it onto ``path`` if the block succeeds, delete it otherwise.
    Stale temporaries of ``path`` from killed processes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def check_free_space(path: str | Path, n_bytes: int, *, what: str = "output") -> None:
    """Raise ``OSError`` (naming ``path``) if the file system of ``path`` has less than ``n_bytes`` free."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if n_bytes > free:
        raise OSError(28, f"not enough free space for the {what} {path}: about {_size(n_bytes)} needed, "
                      f"{_size(free)} free in {folder}")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj, *, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=str))
