"""The third-party libraries metrics come from, and what to install when one is missing.

A metric's :attr:`~metrics.base.MetricSpec.source` names the library that implements it
(``pyiqa``, ``piq``, ``torchmetrics``). Its facts are data and stay known without the library
(reports and ``score`` read them for results computed elsewhere); building it, or selecting it
by name for a run, needs the library installed. pyiqa is an extra, ``iqa-robustness[pyiqa]``,
because its licence is non-commercial (PolyForm Noncommercial 1.0.0) while this project is MIT;
piq and torchmetrics (Apache-2.0) are core dependencies. docs/licences.md has the details.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Library:
    """A library that implements metrics.

    Attributes:
        module: its import name.
        install: the command that installs it into this project's environment.
        licence: its licence (SPDX name where there is one), as its package metadata states it.
    """

    module: str
    install: str
    licence: str


#: the libraries metrics come from, by the ``source`` their specs carry
LIBRARIES = {
    "pyiqa": Library("pyiqa", "pip install 'iqa-robustness[pyiqa]'", "PolyForm-Noncommercial-1.0.0"),
    "piq": Library("piq", "pip install 'piq>=0.8'", "Apache-2.0"),
    "torchmetrics": Library("torchmetrics", "pip install 'torchmetrics>=1.9'", "Apache-2.0"),
}


@functools.cache
def installed(module: str) -> bool:
    """True when ``module`` can be imported (found on ``sys.path``; nothing is imported)."""
    return importlib.util.find_spec(module) is not None


def missing_library(source: str) -> Library | None:
    """The library a metric of this ``source`` needs when it is not installed; ``None`` otherwise."""
    library = LIBRARIES.get(source)
    return library if library is not None and not installed(library.module) else None


def not_installed_message(name: str, library: Library, alternatives: list[str]) -> str:
    """Why metric ``name`` cannot run here, the command that fixes it, and metrics that run instead."""
    others = f"; installed metrics of that name from other libraries: {', '.join(alternatives)}" if alternatives else ""
    return (
        f"metric {name!r} comes from {library.module}, which is not installed: {library.install} "
        f"({library.module} is licensed {library.licence}, see docs/licences.md){others}"
    )
