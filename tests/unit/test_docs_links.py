"""The documentation holds together: every relative link in README.md, docs/*.md and
benchmarks/README.md points at a file that exists and, for `#anchor`, at a heading of
that file; the README stays short enough to read in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
)
README_LIMIT_BYTES = 15_000

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target) or [text](target "title"); the text may hold inline code or an image.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, where links and headings are markdown."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than
    '-' and '_' removed, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    targets: list[str] = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        # Code spans are not markup; a link whose text is code keeps a placeholder text.
        targets.extend(LINK.findall(INLINE_CODE.sub("code", line)))
    return [target for target in targets if not target.startswith(EXTERNAL)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_the_readme_is_short() -> None:
    assert (ROOT / "README.md").stat().st_size < README_LIMIT_BYTES


def test_the_readme_links_every_doc() -> None:
    readme_targets = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    docs = sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))
    missing = [doc for doc in docs if doc not in readme_targets]
    assert missing == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Taking over an ILPS deployment", "taking-over-an-ilps-deployment"),
        ("CPU per task, fan-out, pages, start-up", "cpu-per-task-fan-out-pages-start-up"),
        ("The schema at `c7e1b585e358`", "the-schema-at-c7e1b585e358"),
        ("Routes (new clients, `X-User-Id`)", "routes-new-clients-x-user-id"),
        ("snake_case and [a link](x.md)", "snake_case-and-a-link"),
    ],
)
def test_anchors_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-section) [self](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) `[code](not-a-link.md)`\n"
        "```\n[fenced](also-not-a-link.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with anchor #nowhere",
    ]
