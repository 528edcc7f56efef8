"""Every python code block of README.md and of the documentation pages runs as written.

The blocks are found automatically (every fence opened with ```` ```python ````
in ``README.md`` and ``docs/**/*.md``), so a section or page added is tested
without touching this file. Each
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
  previous python block of the same file (both run as one program), for a
  page that must split one program around some text.
* a first line ``# readme-test: skip: <reason>``: the block is not run, and the
  test says so (``pytest -rs`` lists the reason). For blocks that need what a
  test machine has not got (certificates, a server elsewhere, a shell).

In the documentation pages the markers may also be spelled ``# docs-test:``.
Each file is its own set of programs: a ``# name.py`` block is importable by
the blocks of the file that defines it.

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

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Every file whose python blocks run: the README, then each documentation page.
FILES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
TIMEOUT = 60.0

SKIP = re.compile(r"#\s*(?:readme|docs)-test:\s*skip:\s*(.+)")
CONTINUED = re.compile(r"#\s*(?:readme|docs)-test:\s*continued\b")
FILENAME = re.compile(r"#\s*([\w.]+\.py)\s*$")
PROCESS = re.compile(r"#\s*process\s+(\d+)\s*$")
PROMISE = re.compile(r"\bprint\(.*#.*->\s*(.*\S)\s*$")


def promised(code: str) -> list[str]:
    """What the ``print(...)  # -> text`` lines of a program say it prints."""
    return [m.group(1) for line in code.split("\n") if (m := PROMISE.search(line))]


@dataclasses.dataclass
class Block:
    line: int  # of the opening fence in its file
    code: str
    file: str = ""  # relative to the repository, e.g. "docs/pubsub.md"

    @property
    def first_line(self) -> str:
        return self.code.split("\n", 1)[0].strip()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


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


def file_blocks(path: Path) -> list[Block]:
    """The python blocks of one file, each knowing where it is."""
    name = path.relative_to(ROOT).as_posix()
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    for block in blocks:
        block.file = name
    return blocks


BLOCKS = [block for path in FILES for block in file_blocks(path)]


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_the_parser_finds_every_block(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    blocks = file_blocks(path)
    opened = len(re.findall(r"^```python\s*$", text, re.M))
    continued = sum(len(CONTINUED.findall(block.code)) for block in blocks)
    assert len(blocks) + continued == opened  # none missed, none invented


def test_the_readme_and_the_pages_have_python_blocks() -> None:
    assert len(file_blocks(README)) >= 1  # the tour's example
    assert sum(1 for b in BLOCKS if b.file.startswith("docs/")) >= 15
    assert any(len(split_processes(b.code)) > 1 for b in file_blocks(README))  # two processes


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
def rundirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, str]]]:
    """Per file: the directory its blocks run in, holding its ``# name.py`` blocks, and the env."""
    dirs = {}
    for n, path in enumerate(FILES):
        name = path.relative_to(ROOT).as_posix()
        where = tmp_path_factory.mktemp(f"blocks{n}-{path.stem}")
        runtime = where / ".xdg"
        runtime.mkdir(mode=0o700)
        for block in BLOCKS:
            m = FILENAME.match(block.first_line)
            if m is not None and block.file == name:
                (where / m.group(1)).write_text(block.code, encoding="utf-8")
        env = dict(os.environ)
        env.update(
            YOTON_TRANSPORT="unix",
            XDG_RUNTIME_DIR=str(runtime),
            PYTHONPATH=os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")])),
            PYTHONDONTWRITEBYTECODE="1",
        )
        dirs[name] = (where, env)
    return dirs


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block_runs_as_written(
    block: Block, rundirs: dict[str, tuple[Path, dict[str, str]]]
) -> None:
    skip = SKIP.match(block.first_line)
    if skip is not None:
        pytest.skip(f"{block.where}: {skip.group(1)}")
    where, env = rundirs[block.file]
    name = FILENAME.match(block.first_line)
    if name is not None and name.group(1).startswith("test_"):
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name.group(1)]
        programs: list[tuple[list[str], str | None]] = [(args, None)]
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
                f"{block.where}, program {n} of {len(procs)}, did not finish within "
                f"{TIMEOUT:g} s\n--- stdout\n{out}\n--- stderr\n{err}"
            )
        outcomes.append((proc.returncode, out, err))
    for n, ((status, out, err), (_args, code)) in enumerate(
        zip(outcomes, programs, strict=True), 1
    ):
        where_ = f"{block.where}, program {n} of {len(procs)}"
        assert status == 0, f"{where_} exited with {status}\n--- stdout\n{out}\n--- stderr\n{err}"
        for text in promised(code or ""):
            assert text in out, f"{where_} did not print {text!r}\n--- stdout\n{out}"
