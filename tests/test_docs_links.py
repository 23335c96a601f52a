"""Every relative link in README.md and docs/*.md resolves: the file (or folder) it names exists
inside the repository, and an ``#anchor`` names a heading of the target markdown page under
GitHub's slug rules. Pure Python, no network: links with a scheme (https:, mailto:, ...) and
anything inside code (fenced blocks, inline code spans) are not checked. Also: every page of
docs/ is linked from the README."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

REPO_ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](dest "title") and ![alt](dest); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*\"([^\"]*)\"", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str, blank_code_spans: bool = True) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks, inline code spans blanked
    unless ``blank_code_spans`` is false."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        lines.append((number, INLINE_CODE.sub(lambda code: " " * len(code.group(0)), line) if blank_code_spans else line))
    return lines


def heading_text(raw: str) -> str:
    """A heading's text as GitHub renders it: code spans keep their content, links and images
    their text, emphasis markers and HTML tags go."""
    parts = re.split(r"(`+.+?`+)", raw)
    rendered = []
    for index, part in enumerate(parts):
        if index % 2:
            rendered.append(part.strip("`"))
            continue
        part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)
        part = re.sub(r"<[^>]+>", "", part)
        part = re.sub(r"(\*{1,3}|(?<!\w)_{1,3})(\S(?:.*?\S)?)\1(?!\w)", r"\2", part)
        rendered.append(part)
    return "".join(rendered)


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than hyphens and underscores
    dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a markdown page: each heading's slug (the n-th repeat gets -n) and any
    explicit HTML id or name."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    lines = prose_lines(path.read_text(encoding="utf-8"), blank_code_spans=False)
    headings = []
    for index, (number, line) in enumerate(lines):
        atx = ATX_HEADING.match(line)
        if atx:
            headings.append(atx.group(2) or "")
        elif (
            SETEXT_UNDERLINE.match(line) and index and lines[index - 1][0] == number - 1
            and lines[index - 1][1].strip() and not ATX_HEADING.match(lines[index - 1][1])
            and not (line.strip().startswith("-") and len(line.strip()) < 3)
        ):
            headings.append(lines[index - 1][1].strip())
        found.update(HTML_ANCHOR.findall(line))
    for heading in headings:
        base = slug(heading_text(heading))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, destination) of every link and image in the page's prose."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_LINK):
            for match in pattern.finditer(line):
                found.append((number, match.group(1).strip("<>")))
    return found


def broken_links(files: list[Path], root: Path = REPO_ROOT) -> list[str]:
    """One line per link that does not resolve: ``file:line: (link) reason``."""
    problems = []
    root = root.resolve()
    for page in files:
        for number, destination in links(page):
            where = f"{page.relative_to(root)}:{number}: ({destination})"
            if not destination or SCHEME.match(destination) or destination.startswith("//"):
                continue
            target_part, _, anchor = destination.partition("#")
            target_part = unquote(target_part.split("?")[0])
            if target_part:
                base = root if target_part.startswith("/") else page.parent
                target = (base / target_part.lstrip("/")).resolve()
                if target != root and root not in target.parents:
                    problems.append(f"{where} points outside the repository")
                    continue
                if not target.exists():
                    problems.append(f"{where} {target.relative_to(root)} does not exist")
                    continue
            else:
                target = page
            if anchor and target.suffix.lower() == ".md" and target.is_file():
                if unquote(anchor) not in anchors(target):
                    problems.append(f"{where} no heading of {target.relative_to(root)} has the anchor #{anchor}")
    return problems


def test_every_relative_link_and_anchor_resolves():
    problems = broken_links(markdown_files())
    assert not problems, f"{len(problems)} broken link(s) in README.md and docs/:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (REPO_ROOT / unquote(destination.partition("#")[0])).resolve()
        for _, destination in links(REPO_ROOT / "README.md")
        if not SCHEME.match(destination)
    }
    missing = [str(page.relative_to(REPO_ROOT)) for page in markdown_files()[1:] if page.resolve() not in linked]
    assert not missing, "docs pages not linked from README.md: " + ", ".join(missing)


def test_the_check_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## Set-up: `--flag_name` and **more**\n\n## Twice\n\n## Twice\n\nTitle\n=====\n", encoding="utf-8"
    )
    (tmp_path / "README.md").write_text(
        "# Read me\n"
        "[ok](docs/page.md) [ok](docs/page.md#set-up---flag_name-and-more) [ok](docs/page.md#twice-1)\n"
        "[ok](#read-me) [ok](docs/page.md#title) [ok](https://example.org/x.md) ![ok](docs)\n"
        "[missing](docs/nope.md) ![missing image](docs/nope.png)\n"
        "[bad anchor](docs/page.md#twice-2) [bad own anchor](#nowhere)\n"
        "[outside](../elsewhere.md)\n"
        "`[code span](nope.md)`\n"
        "```\n[fenced](nope.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(markdown_files(tmp_path), tmp_path)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "(docs/nope.md) docs/nope.md does not exist",
        "(docs/nope.png) docs/nope.png does not exist",
        "(docs/page.md#twice-2) no heading of docs/page.md has the anchor #twice-2",
        "(#nowhere) no heading of README.md has the anchor #nowhere",
        "(../elsewhere.md) points outside the repository",
    ]
    assert all(problem.startswith("README.md:") for problem in problems)
