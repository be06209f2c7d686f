"""The docs stay navigable and true to the tests: a short README, every relative link and
#anchor resolving (GitHub's heading slugs), every page reachable from the README, and
every test the docs cite existing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

LINK = re.compile(r"(?<!!)\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def doc_files(root: Path = PROJECT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (links and headings in code are not links or headings)."""
    out, fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fence = not fence
            continue
        if not fence:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, '-'
    and spaces kept), each space a '-'."""
    text = re.sub(r"<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path``; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):      # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path}: ({target})"
            if not dest.exists():
                problems.append(f"{where}: {file_part} does not exist")
            elif anchor and (dest.is_dir() or anchor not in anchors(dest)):
                problems.append(f"{where}: no heading #{anchor} in {file_part or path.name}")
    return problems


def test_readme_is_short():
    lines = (PROJECT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_relative_link_and_anchor_resolves():
    assert broken_links(doc_files()) == []


def test_every_docs_page_is_reachable_from_the_readme():
    pages = {p.resolve() for p in doc_files()}
    reached, todo = set(), [PROJECT / "README.md"]
    while todo:
        page = todo.pop().resolve()
        if page in reached:
            continue
        reached.add(page)
        for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
            file_part = target.partition("#")[0]
            if file_part and not re.match(r"[a-z][a-z0-9+.-]*:", target):
                dest = (page.parent / file_part).resolve()
                if dest.suffix == ".md" and dest in pages:
                    todo.append(dest)
    assert sorted(str(p.relative_to(PROJECT)) for p in pages - reached) == []


def test_the_slugs_follow_githubs_rules():
    assert slug("The real adapters and `python -m automation replace`") == \
        "the-real-adapters-and-python--m-automation-replace"
    assert slug("Benchmark (`make bench`)") == "benchmark-make-bench"
    assert slug("What is verified here, and what needs a real account") == \
        "what-is-verified-here-and-what-needs-a-real-account"
    assert slug("The dry run's predicted replacement") == "the-dry-runs-predicted-replacement"


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    """The check above could fail: a wrong file and a wrong anchor are both reported."""
    (tmp_path / "a.md").write_text("# A\n\n## Real heading\n\n[ok](#real-heading) [ok](b.md#b)\n"
                                   "[bad](#no-such-heading) [bad](c.md) [bad](b.md#nope)\n"
                                   "```\n[in code](#ignored)\n```\n")
    (tmp_path / "b.md").write_text("# B\n")
    found = broken_links([tmp_path / "a.md"])
    assert len(found) == 3, found
    assert any("#no-such-heading" in f for f in found)
    assert any("c.md does not exist" in f for f in found)
    assert any("#nope" in f for f in found)


# ---- the tests the docs cite exist ----------------------------------------------------------------------

def test_names() -> set[str]:
    names = set()
    for path in (PROJECT / "tests").rglob("*.py"):
        names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    return names


test_names.__test__ = False     # a helper, not a test


def cited_tests(text: str) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """Files (``tests/test_x.py``), ``tests/test_x.py::test_name`` pairs and bare ``test_name``s cited."""
    files = set(re.findall(r"\btests/(test_\w+\.py|_\w+\.py)", text))
    pairs = set(re.findall(r"\btests/(test_\w+\.py)::(test_\w+)", text))
    bare = set(re.findall(r"`(test_\w+)`", text))
    return files, pairs, bare


def missing_citations(text: str, known: set[str]) -> list[str]:
    files, pairs, bare = cited_tests(text)
    missing = [f"tests/{f}" for f in files if not (PROJECT / "tests" / f).exists()]
    for f, name in pairs:
        test_file = PROJECT / "tests" / f
        if not test_file.exists() or not re.search(rf"def {name}\b", test_file.read_text(encoding="utf-8")):
            missing.append(f"tests/{f}::{name}")
    return missing + [name for name in bare if name not in known]


def test_every_test_the_docs_cite_exists():
    known = test_names()
    missing = [f"{path.relative_to(PROJECT)}: {m}" for path in doc_files()
               for m in missing_citations(path.read_text(encoding="utf-8"), known)]
    assert sorted(missing) == []


@pytest.mark.parametrize("text, wanted", [
    ("see `tests/test_engine.py::test_no_such_thing`", "tests/test_engine.py::test_no_such_thing"),
    ("see `tests/test_nothing_here.py`", "tests/test_nothing_here.py"),
    ("see `test_no_such_test_anywhere`", "test_no_such_test_anywhere"),
])
def test_the_citation_check_would_catch_a_missing_test(text, wanted):
    assert wanted in missing_citations(text, test_names())
