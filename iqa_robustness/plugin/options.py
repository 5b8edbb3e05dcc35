"""The plugin's options on the pytest command line: ``--iqa-<name>`` always, ``--<name>`` where it is free.

Every option of :data:`~iqa_robustness.runner.options.OPTIONS` is registered as ``--iqa-<name>`` in one
option group, so installing the package adds no name another plugin or a project's ``conftest.py`` could
already use. The short names of the design (``pytest -m uap --metric linearity``) are not registered
with argparse at all: once the initial conftests are loaded, and before pytest's full parse of the command
line, a short name on the command line that nobody else declared is rewritten to its prefixed flag
(:func:`read_short_names`). A short name another plugin or ``conftest.py`` declares is left to it, and a
conftest or plugin that registers later finds the name still free (an argparse alias would make its
``addoption`` fail with "conflicting option string").

pytest's order (``Config.parse``): entry-point plugins' ``pytest_addoption``, a first parse of the
known arguments, then ``pytest_load_initial_conftests`` (which loads the rootdir's and the test paths'
``conftest.py`` files and their options), then the full parse. pytest decides the initial conftests from
the test paths of that first parse, where ``--dataset /data/set`` would leave ``/data/set`` as a test
path: so before the conftests load, the known arguments are read again with the short names taken as
the suite's (:mod:`.rooting` then re-roots the session if that changes its configuration), and after they
load only the names still free are rewritten for good.
"""

from __future__ import annotations

import copy
from collections.abc import Generator
from typing import Any

import pytest

from iqa_robustness.runner.options import GROUP, OPTIONS, PREFIX, option

from .rooting import reroot

#: short name (``--metric``) -> prefixed flag (``--iqa-metric``)
SHORT_NAMES = {o.short: o.flag for o in OPTIONS}
#: names on the command line that went to another plugin or conftest.py (not the suite)
STASH_TAKEN = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every option as ``--iqa-<name>``, in one group; the short names are read from the command line later."""
    group = parser.getgroup(
        GROUP[0],
        f"{GROUP[1]}: each option also as --NAME without '{PREFIX}' where no other plugin or conftest.py "
        "declares NAME; docs/options.md lists them",
    )
    for o in OPTIONS:
        group.addoption(o.flag, **o.argparse_kwargs())


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, Any, Any]:
    """Read the short names before the initial conftests load (for rooting), rewrite the free ones after."""
    _read_known_args(early_config, parser, args)
    if reroot(early_config, args):  # the project's own ini file, whose addopts are now in args
        _read_known_args(early_config, parser, args)
    result = yield
    read_short_names(early_config, parser, args)
    return result


def _read_known_args(config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """pytest's first reading of the known arguments again, with the free short names taken as the suite's.

    Parsed into a fresh copy of the defaults (as pytest does: a repeatable option would otherwise be
    appended twice); the ``confcutdir`` pytest derived from the ini file is kept.
    """
    translated = with_flags(args, _free_short_names(parser, args))
    known = parser.parse_known_args(translated, namespace=copy.copy(config.option))
    if known.confcutdir is None:
        known.confcutdir = config.known_args_namespace.confcutdir
    config.known_args_namespace = known


def read_short_names(config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Rewrite, in place, every short name of ``args`` nobody declared to its ``--iqa-`` flag.

    The names given that another plugin or conftest.py declares stay theirs; they are remembered so a
    session that runs the grid can say where they went.
    """
    args[:] = with_flags(args, _free_short_names(parser, args))
    config.stash[STASH_TAKEN] = _short_names_in(args)  # the short names left are another option's


def with_flags(args: list[str], short_names: set[str]) -> list[str]:
    """``args`` with each of ``short_names`` (``--metric``, ``--metric=x``) as its prefixed flag, up to ``--``."""
    out: list[str] = []
    for i, token in enumerate(args):
        if token == "--":
            return out + list(args[i:])
        name, eq, value = token.partition("=")
        out.append(SHORT_NAMES[name] + eq + value if name in short_names else token)
    return out


def _short_names_in(args: list[str]) -> list[str]:
    names = []
    for token in args:
        if token == "--":
            break
        name = token.partition("=")[0]
        if name in SHORT_NAMES and name not in names:
            names.append(name)
    return names


def _free_short_names(parser: pytest.Parser, args: list[str]) -> set[str]:
    """The suite's short names in ``args`` that no option of the run declares (argparse reports them unknown)."""
    wanted = _short_names_in(args)
    if not wanted:
        return set()
    try:
        _, unknown = parser.parse_known_and_unknown_args(args)
    except pytest.UsageError:  # a bad value of another option: pytest's own parse reports it
        return set()
    unknown_names = {token.partition("=")[0] for token in unknown}
    return {name for name in wanted if name in unknown_names}


def taken_short_names(config: pytest.Config) -> list[str]:
    """Short names on the command line that went to another plugin or conftest.py of the run."""
    return list(config.stash.get(STASH_TAKEN, []))


def value(config: pytest.Config, name: str) -> Any:
    """The value of the suite's option ``name`` (``"results_dir"``) in this session."""
    return getattr(config.option, option(name).dest)


def values(config: pytest.Config) -> dict[str, Any]:
    """Every option of the suite: name -> value, as the command line set it."""
    return {o.name: getattr(config.option, o.dest, o.default) for o in OPTIONS}
