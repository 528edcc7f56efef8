"""Every python code block of README.md runs as written.

The blocks are found automatically (every fence opened with ```` ```python ````),
so a section added to the README is tested without touching this file. Each
block is a program run by a fresh interpreter and must exit with status 0
within :data:`TIMEOUT`. Markers are plain comment lines, which a reader of the
README takes for what they say:

* ``# process 1``, ``# process 2``, ...: the block is several programs that
  run at the same time, as separate processes (lines before the first marker,
  such as imports, go to each). Process 1 starts first; every one must exit 0.
* a first line ``# name.py``: the block is also that file, written to the
  directory every block runs in before any runs, so other blocks import it
  (the plugin recipe); a ``test_*.py`` block is run with pytest.
* a first line ``# readme-test: continued``: the block goes on from the
  previous python block (both run as one program), for a README that must
  split one program around some text.
* a first line ``# readme-test: skip: <reason>``: the block is not run, and the
  test says so (``pytest -rs`` lists the reason). For blocks that need what a
  test machine has not got (certificates, a server elsewhere, a shell).

A ``print(...)`` line whose comment ends in ``-> text`` promises that output:
the program's stdout must contain ``text``.

Blocks run in a private directory with ``YOTON_TRANSPORT=unix`` and a private
``XDG_RUNTIME_DIR``: the same code as on TCP (every transport takes the
``host:port`` form), but a named address such as ``localhost:chat`` is a
socket file of this run, so two runs of the suite at once, or a program that
holds the hashed TCP port, cannot collide with it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
TIMEOUT = 60.0

SKIP = re.compile(r"#\s*readme-test:\s*skip:\s*(.+)")
CONTINUED = re.compile(r"#\s*readme-test:\s*continued\b")
FILENAME = re.compile(r"#\s*([\w.]+\.py)\s*$")
PROCESS = re.compile(r"#\s*process\s+(\d+)\s*$")
PROMISE = re.compile(r"\bprint\(.*#.*->\s*(.*\S)\s*$")


def promised(code: str) -> list[str]:
    """What the ``print(...)  # -> text`` lines of a program say it prints."""
    return [m.group(1) for line in code.split("\n") if (m := PROMISE.search(line))]


@dataclasses.dataclass
class Block:
    line: int  # of the opening fence in README.md
    code: str

    @property
    def first_line(self) -> str:
        return self.code.split("\n", 1)[0].strip()


def python_blocks(text: str) -> list[Block]:
    """The python blocks of a markdown text, with ``continued`` ones joined."""
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(`{3,}|~{3,})\s*(\S*)", lines[i])
        if fence is None:
            i += 1
            continue
        indent, marks, lang = fence.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(marks):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if lang.lower() not in ("python", "py", "python3"):
            continue
        block = Block(start + 1, "\n".join(body) + "\n")
        if CONTINUED.match(block.first_line) and blocks:
            blocks[-1].code += block.code
            continue
        blocks.append(block)
    return blocks


def split_processes(code: str) -> list[str]:
    """``[code]``, or one program per ``# process N`` part (the common head in each)."""
    parts: dict[int, list[str]] = {}
    head: list[str] = []
    current: list[str] | None = None
    for line in code.split("\n"):
        m = PROCESS.match(line.strip())
        if m is not None:
            current = parts.setdefault(int(m.group(1)), [])
            continue
        (head if current is None else current).append(line)
    if not parts:
        return [code]
    return ["\n".join(head + parts[n]) + "\n" for n in sorted(parts)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks_and_the_parser_finds_them() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) >= 10
    opened = len(re.findall(r"^```python\s*$", text, re.M))
    continued = sum(block.code.count("# readme-test: continued") for block in BLOCKS)
    assert len(BLOCKS) + continued == opened  # none missed, none invented
    assert any(len(split_processes(b.code)) > 1 for b in BLOCKS)  # the first example


def test_the_conventions_parse() -> None:
    text = (
        "intro\n```python\n# a.py\nX = 1\n```\nsome text\n"
        "```python\n# readme-test: continued\nprint(X)\n```\n"
        "```text\nnot python\n```\n"
        "```python\nimport os\n# process 1\nA\n# process 2\nB\n```\n"
    )
    blocks = python_blocks(text)
    assert [b.line for b in blocks] == [2, 14]
    assert blocks[0].code == "# a.py\nX = 1\n# readme-test: continued\nprint(X)\n"
    assert FILENAME.match(blocks[0].first_line)
    assert split_processes(blocks[1].code) == ["import os\nA\n", "import os\nB\n\n"]
    assert promised("print(f(x))  # a note -> 7\nf(x)  # -> not printed\n") == ["7"]


@pytest.fixture(scope="module")
def rundir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The directory blocks run in, holding every ``# name.py`` block, and the env."""
    where = tmp_path_factory.mktemp("readme")
    runtime = where / ".xdg"
    runtime.mkdir(mode=0o700)
    for block in BLOCKS:
        m = FILENAME.match(block.first_line)
        if m is not None:
            (where / m.group(1)).write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    env.update(
        YOTON_TRANSPORT="unix",
        XDG_RUNTIME_DIR=str(runtime),
        PYTHONPATH=os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")])),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return where, env


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, rundir: tuple[Path, dict[str, str]]) -> None:
    skip = SKIP.match(block.first_line)
    if skip is not None:
        pytest.skip(f"README.md:{block.line}: {skip.group(1)}")
    where, env = rundir
    name = FILENAME.match(block.first_line)
    if name is not None and name.group(1).startswith("test_"):
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name.group(1)]
        programs = [(args, None)]
    else:
        programs = [([sys.executable, "-c", code], code) for code in split_processes(block.code)]
    procs = [
        subprocess.Popen(
            args, cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, _code in programs
    ]
    outcomes = []
    for n, proc in enumerate(procs, 1):
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            out, err = proc.communicate()
            pytest.fail(
                f"README.md:{block.line}, program {n} of {len(procs)}, did not finish within "
                f"{TIMEOUT:g} s\n--- stdout\n{out}\n--- stderr\n{err}"
            )
        outcomes.append((proc.returncode, out, err))
    for n, ((status, out, err), (_args, code)) in enumerate(
        zip(outcomes, programs, strict=True), 1
    ):
        where_ = f"README.md:{block.line}, program {n} of {len(procs)}"
        assert status == 0, f"{where_} exited with {status}\n--- stdout\n{out}\n--- stderr\n{err}"
        for text in promised(code or ""):
            assert text in out, f"{where_} did not print {text!r}\n--- stdout\n{out}"
