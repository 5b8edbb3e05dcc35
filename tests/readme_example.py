"""The README's "Test your own metric" section as data: its files and its commands.

Tests read the example out of README.md itself (``test_readme_example.py`` in this checkout's
environment, ``test_install.py`` in a fresh one), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Test your own metric"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


def section() -> str:
    """The text of the section, up to the next second-level heading."""
    text = README.read_text(encoding="utf-8")
    if SECTION not in text:
        raise AssertionError(f"README.md has no {SECTION!r} section")
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def blocks(language: str) -> list[str]:
    """The section's fenced code blocks in ``language``, in order."""
    return [body for lang, body in _BLOCK.findall(section()) if lang == language]


def files() -> dict[str, str]:
    """The section's code blocks that open with a ``# <file name>`` comment, by file name."""
    named: dict[str, str] = {}
    for lang in ("python", "toml"):
        for body in blocks(lang):
            first = body.splitlines()[0]
            if first.startswith("# "):
                named[first[2:].split()[0]] = body
    return named


def write(folder: Path, *names: str) -> None:
    """Write the named README files into ``folder``."""
    found = files()
    for name in names:
        (folder / name).write_text(found[name], encoding="utf-8")


def command(containing: str) -> list[str]:
    """The first command of the section's bash blocks that contains ``containing``, as arguments."""
    for body in blocks("bash"):
        for line in body.splitlines():
            if containing in line:
                return shlex.split(line, comments=True)
    raise AssertionError(f"no command with {containing!r} in the README's {SECTION!r} section")


def metric_targets() -> list[str]:
    """Every ``--metric module:Name`` the section's text names."""
    return sorted(set(re.findall(r"--metric ([A-Za-z_][\w.]*:[A-Za-z_]\w*)", section())))
