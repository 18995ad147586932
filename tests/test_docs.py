"""The README and docs/ hold together: every relative link resolves, the README stays short and links every page."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_README_LINES = 150

# [text](target) or [text](target "title"); images (![alt](src)) match too, which is what we want.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = ("http://", "https://", "mailto:")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (links are not links there)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def relative_links(path: Path) -> list[str]:
    """Every relative link target in a Markdown file: external and pure #anchor links left out."""
    targets = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not t.startswith(EXTERNAL) and not t.startswith("#")]


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose target (resolved from the file's folder, #anchor stripped) is missing."""
    return [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]


def test_every_relative_link_resolves():
    broken = {str(p.relative_to(REPO_ROOT)): b for p in _pages() if (b := broken_links(p))}
    assert broken == {}


def test_the_link_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# there\n")
    page = tmp_path / "page.md"
    page.write_text(
        "See [there](there.md), [a section](there.md#there), [the web](https://example.com),\n"
        "[mail](mailto:a@b.c), [here](#top) and [gone](missing/page.md#x).\n"
        "```\n[not a link](in-a-fence.md)\n```\n"
    )
    assert relative_links(page) == ["there.md", "there.md#there", "missing/page.md#x"]
    assert broken_links(page) == ["missing/page.md#x"]


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_links_every_docs_page():
    linked = {(README.parent / t.split("#", 1)[0]).resolve() for t in relative_links(README)}
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_every_docs_page_links_back_to_the_readme():
    for page in sorted(DOCS.glob("*.md")):
        assert "../README.md" in relative_links(page), f"{page.name} does not link back to the README"
