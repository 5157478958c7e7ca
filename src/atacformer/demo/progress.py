"""One plain line when each step of the demo starts and ends (readable in a terminal and in a log file)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Steps(dict):
    """Context manager per step: prints ``[demo i/n] name: what …`` and ``… done in s``; the seconds of
    each step are kept as ``{name: seconds}``."""

    def __init__(self, total: int, *, progress: bool = True, stream=None):
        super().__init__()
        self.total, self.progress, self.stream, self.i = total, progress, stream, 0

    def say(self, text: str) -> None:
        """Print one progress line (to stderr unless another stream was given), when progress is on."""
        if self.progress:
            print(text, file=self.stream or sys.stderr, flush=True)

    @contextmanager
    def __call__(self, name: str, what: str):
        self.i += 1
        tag = f"[demo {self.i}/{self.total}] {name}"
        self.say(f"{tag}: {what} …")
        t = time.perf_counter()
        yield
        self[name] = time.perf_counter() - t
        self.say(f"{tag}: done in {self[name]:.1f} s")
