"""README.md must run as written: every ```python block, and every ```bash block marked with a
``<!-- test -->`` line just before it, runs on its own (a fresh interpreter / shell in an empty
folder, nothing from earlier blocks), and `.ci/run` runs exactly the set-up commands of the README.

A block that still fails is listed in ``KNOWN_FAILING`` with the reason; the xfail is strict, so the
entry must be removed once the block runs. ``NOT_RUN`` lists blocks too slow to run as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
TEST_MARK = "<!-- test -->"
BLOCK_TIMEOUT_S = 600

# block id -> why it does not run yet (whose section it is in brackets). Strict xfail: runs, must fail.
KNOWN_FAILING: dict[str, str] = {
}
# block id -> why it is not run at all (too slow for the test suite as written); xfail(run=False)
NOT_RUN: dict[str, str] = {
}


@dataclass(frozen=True)
class Block:
    section: str  # the "## " heading it sits under
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    marked: bool  # a <!-- test --> line comes right before the fence
    index: int = 1  # 1st, 2nd, ... block of this language in its section

    @property
    def id(self) -> str:  # stable when other sections change: section, language, ordinal
        return f"{_slug(self.section)}-{self.lang or 'text'}{self.index}"


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:40].strip("-")


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with its section, language, first line and test mark."""
    blocks, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            lang = line[3:].strip()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"README.md line {i + 1}: unclosed code fence")
            prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            index = 1 + sum(b.section == section and b.lang == lang for b in blocks)
            blocks.append(Block(section, lang, "\n".join(lines[i + 1:end]) + "\n", i + 1, prev == TEST_MARK, index))
            i = end
        i += 1
    return blocks


def _runnable() -> list[Block]:
    return [b for b in readme_blocks(README.read_text()) if b.lang == "python" or (b.lang == "bash" and b.marked)]


def _params():
    out = []
    for b in _runnable():
        marks = []
        if b.id in KNOWN_FAILING:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[b.id])]
        elif b.id in NOT_RUN:
            marks = [pytest.mark.xfail(run=False, reason=NOT_RUN[b.id])]
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")  # the checkout under test, also when it is not the installed copy
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OMP_NUM_THREADS", "2")
    # `atacformer` in a bash block is this interpreter's console script, or the module when none is installed
    bindir = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    return env


@pytest.mark.parametrize("block", _params())
def test_readme_block_runs(block: Block, tmp_path: Path):
    if block.lang == "python":
        script = tmp_path / "_readme_block.py"
        script.write_text(block.code)
        cmd = [sys.executable, script.name]
    else:
        script = tmp_path / "_readme_block.sh"
        prelude = "" if (Path(sys.executable).parent / "atacformer").exists() else \
            f'atacformer() {{ "{sys.executable}" -m atacformer "$@"; }}\n'
        script.write_text("set -euo pipefail\n" + prelude + block.code)
        cmd = ["bash", script.name]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"README.md line {block.line} ({block.section}, id {block.id}) failed with exit code {proc.returncode}:\n"
        f"--- code ---\n{block.code}--- stderr (tail) ---\n{proc.stderr[-4000:]}\n--- stdout (tail) ---\n"
        f"{proc.stdout[-2000:]}")


def _commands(text: str) -> list[str]:
    """Command lines of a shell text: no comments, blank lines or the strict-mode/cd preamble."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("set -") or s.startswith('cd "$(dirname'):
            continue
        out.append(s)
    return out


def setup_block() -> Block:
    """The first block under '## Set-up': the two commands."""
    blocks = [b for b in readme_blocks(README.read_text()) if b.section.lower().startswith("set-up")]
    assert blocks and blocks[0].lang == "bash", "README.md needs a ```bash block first under '## Set-up'"
    return blocks[0]


def test_ci_runs_exactly_the_readme_setup_commands():
    readme_cmds = _commands(setup_block().code)
    assert len(readme_cmds) == 2, readme_cmds
    assert _commands(CI_RUN.read_text()) == readme_cmds


def test_setup_installs_what_the_tests_import():
    install, tests = _commands(setup_block().code)
    assert re.search(r"pip install [^&]*\.\[test\]", install), install
    assert tests == "python -m pytest -q tests"


def test_known_failing_ids_exist():
    ids = {b.id for b in _runnable()}
    assert set(KNOWN_FAILING) | set(NOT_RUN) <= ids, sorted((set(KNOWN_FAILING) | set(NOT_RUN)) - ids)


def test_block_parser():
    text = "## A\n```python\nx = 1\n```\n<!-- test -->\n\n```bash\necho hi\n```\n## B b\n```bash\nls\n```\n"
    blocks = readme_blocks(text)
    assert [(b.section, b.lang, b.code, b.line, b.marked) for b in blocks] == [
        ("A", "python", "x = 1\n", 2, False), ("A", "bash", "echo hi\n", 7, True), ("B b", "bash", "ls\n", 11, False)]
    assert [b.id for b in blocks] == ["a-python1", "a-bash1", "b-b-bash1"]
    with pytest.raises(ValueError, match="line 1: unclosed"):
        readme_blocks("```python\nx\n")
