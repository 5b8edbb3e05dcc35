"""One registry mechanism for metrics, attacks and datasets: names, aliases, selection, "did you mean".

In the manner of timm's model registry (a thing registers itself where it is defined) and pyiqa's
``create_metric`` (a typo gets the close matches), every registry of the suite is a
:class:`Registry`: one key rule per registry (``normalise``), aliases, ``all`` / globs / comma
lists for selection, and one error class per registry so callers can catch what they expect.

A registry may also resolve names it does not hold yet (``resolve_missing``): the metrics registry
uses it for ``module:Name`` specs, entry points and pyiqa's own metric list. docs/architecture.md,
"How a piece registers itself", lists what registers where.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

GLOB_CHARACTERS = "*?["


def lower_key(name: str) -> str:
    """The default key rule: case-insensitive, surrounding blanks ignored."""
    return name.strip().lower()


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what the entries are, for messages (``metric``, ``attack``, ``dataset``).
        error: the exception raised for an unknown name (a ``ValueError`` or ``KeyError`` subclass
            taking one message argument).
        normalise: the key rule: what two spellings of the same name have in common.
        hint: appended to the "unknown name" message (how to list the names, what else is accepted).
        resolve_missing: called with a name the registry does not hold; it may register the name
            (and return True) or return False. Its own errors (a bad ``module:Name``) propagate.
        candidates: extra names offered as suggestions (names that resolve but are not registered).
        load_all: called before a selection expands every name (``None``, ``all`` or a glob), so a
            registry whose names arrive lazily (installed entry points) lists them all.
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[Exception] = ValueError,
        normalise: Callable[[str], str] = lower_key,
        hint: str | Callable[[], str] = "",
        resolve_missing: Callable[[str], bool] | None = None,
        candidates: Callable[[], Iterable[str]] | None = None,
        load_all: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.error = error
        self.normalise = normalise
        self._hint = hint
        self.resolve_missing = resolve_missing
        self._candidates = candidates
        self._load_all = load_all
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    # -- registering ---------------------------------------------------------------------
    def register(self, name: str, entry: T, *, aliases: Iterable[str] = (), replace: bool = True) -> T:
        """Add ``entry`` under ``name`` (and ``aliases``); with ``replace=False`` a taken name raises."""
        key = self.normalise(name)
        if not key:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        if key in self._entries:
            if not replace:
                raise ValueError(f"{self.kind} {key!r} is already registered; pass replace=True to override it")
            log.debug("%s %s registered again; replacing the earlier entry", self.kind, key)
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[self.normalise(alias)] = key
        return entry

    def unregister(self, name: str) -> None:
        """Remove a name and its aliases (tests and plugins that register temporarily)."""
        key = self.canonical(name)
        del self._entries[key]
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]

    # -- looking up ----------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered key for ``name`` or an alias of it; an unknown name raises ``error`` with suggestions."""
        key = self._lookup(name)
        if key is None and self.resolve_missing is not None and self.resolve_missing(name.strip()):
            key = self._lookup(name)
        if key is None:
            raise self.error(self.unknown_message(name))
        return key

    def _lookup(self, name: str) -> str | None:
        key = self.normalise(name)
        key = self._aliases.get(key, key)
        return key if key in self._entries else None

    def __getitem__(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Registered names, sorted (aliases not included)."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def suggestions(self, name: str, n: int = 3) -> list[str]:
        """Registered names, aliases and extra candidates close to ``name``."""
        pool = [*self._entries, *self._aliases, *(self._candidates() if self._candidates else ())]
        return difflib.get_close_matches(self.normalise(name), pool, n=n, cutoff=0.6)

    def unknown_message(self, name: str) -> str:
        close = self.suggestions(name)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        extra = self._hint() if callable(self._hint) else self._hint
        return f"unknown {self.kind} {name!r}{hint}" + (f" ({extra})" if extra else "")

    def _expand_all(self) -> None:
        if self._load_all is not None:
            self._load_all()

    # -- selecting -----------------------------------------------------------------------
    def select(self, patterns: str | Iterable[str] | None = None) -> list[str]:
        """Expand ``all``, globs (``nima*``) and comma lists into registered names, sorted, once each.

        Args:
            patterns: ``None`` or ``"all"`` for every name, a glob, a comma list, or an iterable of those.
                An exact name goes through :meth:`canonical` (a typo raises with suggestions); a glob
                may match nothing.
        """
        if patterns is None:
            self._expand_all()
            return self.names()
        if isinstance(patterns, str):
            patterns = [patterns]
        wanted: list[str] = []
        for chunk in patterns:
            for pattern in split_commas(chunk):
                if pattern.lower() == "all":
                    self._expand_all()
                    wanted.extend(self._entries)
                elif any(ch in pattern for ch in GLOB_CHARACTERS):
                    self._expand_all()
                    wanted.extend(fnmatch.filter(self._entries, self.normalise(pattern)))
                else:
                    wanted.append(self.canonical(pattern))
        return sorted(set(wanted))


def split_commas(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``, keeping commas inside parentheses (``ifgsm(eps=1,iters=2)``)."""
    items, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]
