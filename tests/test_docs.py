"""The documentation that ships with the code: README.md and the pages of docs/.

Every relative Markdown link of README.md and docs/*.md leads to a file of the checkout, and to a
heading of that file where the link names one (GitHub's anchor rule). Every citation of a page in the
repository's files (``docs/<page>.md``, and ``docs/<page>.md, "Section"`` in docstrings and comments)
names a page that exists and the start of one of its headings. No file sends a reader to
documentation outside the repository: a user's clone has no reference folder, which holds data for
the tests and nothing to read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
#: ``docs/ci.md``, ``docs/ci.md, "Slurm and Kubernetes"`` (also after backticks, without the comma, single quotes)
_CITATION = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)`{0,2}(?:(?:,|\s)[\s#*]*(?:\"([^\"\n]+)\"|'([^'\n]+)'))?")
#: Documentation kept outside the repository: the benchmark's specification file of the reference folder,
#: and any path into that folder written relative to the checkout (a user's clone has neither).
_OUTSIDE = re.compile("METHODOLOGY" + r"\.md|" + r"\.\." + "/shared/")


def _prose(markdown: str) -> str:
    """The text of a Markdown page without its code: fenced blocks and inline code spans removed."""
    return _INLINE_CODE.sub("", _FENCE.sub("", markdown))


def _plain(heading: str) -> str:
    """A heading as GitHub renders its text: links reduced to their text, code and emphasis marks dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return text.replace("`", "").replace("**", "").strip()


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", _plain(heading).lower()).replace(" ", "-")


@cache
def headings(page: Path) -> tuple[str, ...]:
    """The headings of a Markdown page, in order, as rendered text (code blocks are not headings)."""
    return tuple(_plain(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))))


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of a page; a repeated heading's anchors get ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(page):
        slug = _slug(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(found)


def _links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES for target in _LINK.findall(_prose(page.read_text(encoding="utf-8")))]


def _relative(links: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    return [(page, target) for page, target in links if not _SCHEME.match(target)]


LINKS = _relative(_links())


@cache
def repository_files() -> tuple[Path, ...]:
    """The checkout's files that git tracks or would track (untracked files that are not ignored)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout (or git is not installed): the files to scan are git's list")
    listed = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(ROOT / name for name in sorted(set(listed.split("\0"))) if name and (ROOT / name).is_file())


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def test_the_readme_and_the_docs_have_pages_to_check():
    assert (ROOT / "README.md").is_file()
    assert (DOCS / "index.md").is_file(), "docs/index.md lists every page"
    assert len(LINKS) > 20, f"only {len(LINKS)} relative links found: the link pattern no longer matches"


@pytest.mark.parametrize(
    ("page", "target"), LINKS, ids=[f"{page.relative_to(ROOT)}->{target}" for page, target in LINKS]
)
def test_a_relative_link_leads_to_a_file_and_heading_of_the_checkout(page: Path, target: str):
    path, _, anchor = target.partition("#")
    file = (page.parent / unquote(path)).resolve() if path else page
    where = f"{page.relative_to(ROOT)} links {target!r}"

    assert file.is_relative_to(ROOT), f"{where}: outside the repository"
    assert file.exists(), f"{where}: {file.relative_to(ROOT)} does not exist"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), (
            f"{where}: {file.relative_to(ROOT)} has no heading with that anchor; its anchors: {sorted(anchors(file))}"
        )


def test_every_page_of_docs_is_listed_in_the_index_and_the_index_in_the_readme():
    index = {(DOCS / target.partition("#")[0]).resolve() for page, target in LINKS if page == DOCS / "index.md"}
    readme = {target.partition("#")[0] for page, target in LINKS if page == ROOT / "README.md"}
    unlisted = [page.name for page in DOCS.glob("*.md") if page.name != "index.md" and page.resolve() not in index]

    assert not unlisted, f"docs/index.md does not list {unlisted}"
    assert "docs/index.md" in readme, "README.md does not link docs/index.md"


def test_every_page_cited_in_the_repository_exists_with_the_section_it_names():
    wrong = []
    for path in repository_files():
        text = _text(path)
        if text is None or "docs/" not in text:
            continue
        for match in _CITATION.finditer(text):
            page, section = DOCS / match.group(1), match.group(2) or match.group(3)
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
            if not page.is_file():
                wrong.append(f"{where}: docs/{match.group(1)} does not exist")
            elif section and not any(h.lower().startswith(section.strip().lower()) for h in headings(page)):
                wrong.append(f"{where}: docs/{match.group(1)} has no section {section!r}; headings: {headings(page)}")

    assert not wrong, "\n".join(wrong)


def test_no_file_cites_documentation_outside_the_repository():
    found = []
    for path in repository_files():
        text = _text(path)
        for match in _OUTSIDE.finditer(text or ""):
            found.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}")

    assert not found, (
        "cite the page of docs/ instead (docs/methodology.md is the specification), and write data paths of "
        "the reference folder as $IQA_ROBUSTNESS_SHARED/...:\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Long runs: stop, resume, shards, merge", "long-runs-stop-resume-shards-merge"),
        ("Your metric's own repository", "your-metrics-own-repository"),
        ("Transferability (ours)", "transferability-ours"),
        ("`--iqa-grid`: the quick grid", "--iqa-grid-the-quick-grid"),
        ("iqa-robustness — can this quality metric be fooled?", "iqa-robustness--can-this-quality-metric-be-fooled"),
    ],
)
def test_anchors_follow_githubs_rule(heading: str, anchor: str):
    assert _slug(heading) == anchor
