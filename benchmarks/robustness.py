"""Bad-input corpus through the ``atacformer`` CLI: every case is classified as

- **clear error**: exit 2 with a one-line message naming the offending file (or option);
- **unclear error**: exit 2 but the message does not name it;
- **traceback**: an exception escaped ``atacformer.cli.main``;
- **silent wrong output**: exit 0 where an error was due, or an output that fails the case's check;
- **ok**: a valid (or repairable) input ingested correctly;
- **leftovers**: temporary files or spill folders left behind (counted separately, after every case).

Run: ``python benchmarks/robustness.py`` (about two minutes on 2 cores; nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness_cases import (
    dna_cases,
    fragment_cases,
    model_cases,
    output_cases,
    region_cases,
)
from robustness_data import BIN, Case, _mkdir

from atacformer.cli import main


def leftovers(folders: list[Path]) -> list[Path]:
    out = []
    for d in folders:
        if d.is_dir():
            out += [p for p in d.rglob(".*") if p.name.endswith((".tmp", ".old", ".h5ad")) or ".tmp" in p.name]
            out += [p for p in d.glob("atacformer-*")]
    return out


def run_case(case: Case, folders: list[Path]) -> tuple[str, str, int]:
    err, out = io.StringIO(), io.StringIO()
    before = set(leftovers(folders))
    ctx = case.setup() if case.setup else None
    log = logging.StreamHandler(err)  # the CLI's own handler is bound to the first case's stream
    logging.getLogger().addHandler(log)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), (ctx or contextlib.nullcontext()):
            rc = main(case.argv)
    except BaseException:  # noqa: BLE001 - a traceback is what this benchmark counts
        return "traceback", traceback.format_exc(limit=3), len(set(leftovers(folders)) - before)
    finally:
        logging.getLogger().removeHandler(log)
    text = err.getvalue()
    n_left = len(set(leftovers(folders)) - before)
    if case.expect == "error":
        if rc == 0:
            return "silent wrong output", "exit 0 where an error was due", n_left
        names = case.names or (Path(next(a for a in case.argv[1:] if not a.startswith("-"))).name,)
        clear = rc == 2 and all(n in text for n in names) and "Traceback" not in text
        if case.check and not case.check(text):
            return "silent wrong output", "the case's check failed after the error", n_left
        last = text.strip().splitlines()[-1][:160] if text.strip() else f"exit {rc}, no message"
        return ("clear error" if clear else "unclear error"), last, n_left
    if rc != 0:
        return "unexpected error", text.strip()[-200:], n_left
    ok = case.check(text) if case.check else True
    return ("ok" if ok else "silent wrong output"), text.strip()[-160:], n_left


def signal_cases(d: Path, tmp: Path) -> list[tuple[str, str, str, int]]:
    """Kill an ingest mid-run (subprocess): SIGTERM must clean up; after SIGKILL the next run must."""
    big = d / "big_fragments.tsv"
    rng = np.random.default_rng(5)
    n = 1_500_000
    df = pd.DataFrame({"c": rng.choice([f"chr{i}" for i in range(1, 20)], n), "s": rng.integers(0, 50_000_000, n),
                       "b": rng.integers(0, 2000, n)})
    df["e"] = df["s"] + rng.integers(60, 600, n)
    df["b"] = "CELL" + df["b"].astype(str) + "AACCGGTT-1"
    df[["c", "s", "e", "b"]].to_csv(big, sep="\t", header=False, index=False)
    out = _mkdir(d / "out_signals")
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "atacformer", "ingest", str(big), "-o", str(out / "big.h5ad"), "--bin-size", BIN,
           "--force-genome"]
    results = []
    for sig, name in ((signal.SIGTERM, "SIGTERM mid-ingest"), (signal.SIGKILL, "SIGKILL mid-ingest, then rerun")):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120  # wait until it is reading (its spill folder exists), then a little more
        while not list(tmp.glob(f"atacformer-ingest-{proc.pid}-*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        rc = proc.returncode
        if sig == signal.SIGKILL:  # the next run (any ingest to the same output) sweeps what was left
            again = subprocess.run(cmd[:4] + [str(d / "good_fragments.tsv.gz")] + cmd[5:], env=env,
                                   capture_output=True, check=False)
            rc = rc if again.returncode == 0 else f"{rc}, rerun {again.returncode}"
        left = len(leftovers([out, tmp]))
        ok = rc == 143 if sig == signal.SIGTERM else rc == -9
        tb = b"Traceback" in err
        kind = "traceback" if tb else ("ok" if ok else "unexpected error")
        results.append((name, kind, f"exit {rc}", left))
        for p in leftovers([out, tmp]):  # do not count them twice
            _remove(p)
    return results


def _remove(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


KINDS = ("ok", "clear error", "unclear error", "unexpected error", "traceback", "silent wrong output")


def main_benchmark() -> int:
    work = Path(tempfile.mkdtemp(prefix="robustness-"))
    tmp = _mkdir(work / "tmp")
    tempfile.tempdir = str(tmp)  # spill folders of in-process runs land here, to be counted
    d = _mkdir(work / "data")
    t0 = time.time()
    cases = fragment_cases(d) + region_cases(d) + output_cases(d, tmp) + dna_cases(d)
    cases += model_cases(d)
    rows = []
    for case in cases:
        kind, detail, n_left = run_case(case, [d, tmp])
        rows.append((case.name, kind, detail, n_left))
    rows += signal_cases(d, tmp)
    print(f"{'case':48s} {'result':20s} leftovers  detail")
    for name, kind, detail, n_left in rows:
        print(f"{name[:48]:48s} {kind:20s} {n_left:9d}  {detail.splitlines()[-1][:110] if detail else ''}")
    counts = {k: sum(r[1] == k for r in rows) for k in KINDS}
    print(f"\ncases: {len(rows)}   " + "   ".join(f"{k}: {v}" for k, v in counts.items())
          + f"   leftovers: {sum(r[3] for r in rows)}   ({time.time() - t0:.0f} s)")
    _remove(work)
    return 0 if counts["traceback"] == counts["silent wrong output"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main_benchmark())
