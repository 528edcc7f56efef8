"""The documentation site builds, strictly, and covers the public API.

``mkdocs build --strict`` fails on a broken link, a missing anchor, a
reference to an object that does not exist or a docstring mkdocstrings cannot
parse, so a change of the code that breaks the site fails here, not when
someone next publishes it. The build takes a few seconds; it needs the docs
extra, which the test extra includes (``python3 dev.py test`` installs it).

The code blocks of the pages run in ``tests/test_readme.py``.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import yoton

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``--strict`` into a temporary directory."""
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"{exc.name} is missing: the test extra installs the docs extra "
            "(run 'python3 dev.py test' once, or pip install -e .[docs])"
        )
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return out


def anchors(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def reference_entries() -> set[str]:
    """Every ``::: name`` directive of the reference pages."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    return set(re.findall(r"^:::\s*(\S+)", text, re.M))


def test_the_site_builds_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "protocol" / "index.html").is_file()
    assert not (site / "hooks.py").exists()  # the build's code is not published


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    entries = reference_entries()
    missing = [n for n in yoton.__all__ if f"yoton.{n}" not in entries]
    assert not missing, f"add '::: yoton.<name>' for {missing} to a page of docs/reference/"
    ids = set().union(*(anchors(p) for p in (site / "reference").rglob("index.html")))
    unrendered = [n for n in yoton.__all__ if f"yoton.{n}" not in ids]
    assert not unrendered, f"in the reference but not rendered: {unrendered}"


def documented(html: str, anchor: str) -> bool:
    """Whether the entry ``anchor`` of a rendered page has text of its own."""
    start = html.find(f'id="{anchor}"')
    if start < 0:
        return False
    start = html.find("</h", start)  # the end of the entry's heading
    end = html.find('class="doc doc-heading"', start)  # the next entry's
    return "<p>" in html[start : end if end > 0 else len(html)]


def test_every_name_of_yoton_transport_is_in_the_reference(site: Path) -> None:
    """The plugin authors' module: each name has an entry with text, under
    ``yoton.transport.X`` or, for names users share, ``yoton.X``."""
    import yoton.transport

    pages = {p: p.read_text(encoding="utf-8") for p in (site / "reference").rglob("index.html")}
    missing = []
    for name in yoton.transport.__all__:
        ids = (f"yoton.transport.{name}", f"yoton.{name}")
        if not any(documented(html, i) for html in pages.values() for i in ids):
            missing.append(name)
    assert not missing, f"yoton.transport names without a documented entry: {missing}"


def test_every_public_name_has_a_docstring() -> None:
    thin = []
    for name in yoton.__all__:
        obj = getattr(yoton, name)
        if name == "__version__":
            continue
        doc = inspect.getdoc(obj) or ""
        if len(doc) < 40:
            thin.append(name)
    assert not thin, f"public names without a real docstring: {thin}"


def test_the_cli_reference_is_the_parsers_help(site: Path) -> None:
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("sub", "pub", "call", "state", "transports", "bench"):
        assert f"yoton {command} --help" in page
    assert "--connect-timeout" in page and "exit codes:" in page
    assert "yoton-help:" not in page  # every marker was replaced


def page_of(site: Path, doc: str) -> Path:
    """The built HTML of ``docs/<doc>.md`` (``index`` is the site's front page)."""
    return site / "index.html" if doc == "index" else site / doc / "index.html"


def test_code_points_only_to_pages_and_anchors_that_exist(site: Path) -> None:
    """Comments and docstrings say ``docs/protocol.md#framing``: that must exist."""
    pointers: list[tuple[str, str, str]] = []
    for pattern in ("yoton*/**/*.py", "tests/*.py", "benchmarks/*.py", "fuzz/*.py"):
        for path in ROOT.glob(pattern):
            if path == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8")
            assert "PROTOCOL.md" not in text, f"{path}: point to docs/protocol.md instead"
            for doc, anchor in re.findall(r"\bdocs/([\w/]+)\.md(?:#([\w-]+))?", text):
                pointers.append((str(path.relative_to(ROOT)), doc, anchor))
    assert any(doc == "protocol" for _, doc, _ in pointers)  # the protocol code says where
    broken = []
    for where, doc, anchor in pointers:
        page = page_of(site, doc)
        if not page.is_file() or (anchor and anchor not in anchors(page)):
            broken.append((where, f"docs/{doc}.md#{anchor}" if anchor else f"docs/{doc}.md"))
    assert not broken, f"pointers to pages or sections that do not exist: {broken}"
