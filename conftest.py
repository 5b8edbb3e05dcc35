"""Checkout-only checks for pytest runs in this repository.

The robustness plugin is not registered here: it is installed with the package (the ``pytest11``
entry point names :mod:`iqa_robustness.plugin`), so it works the same in this checkout and in any
other project. This file only makes sure that the ``iqa_robustness`` pytest imported is this
checkout's (the README's editable install), so a test never runs against another copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    import iqa_robustness.metrics

    installed = Path(iqa_robustness.metrics.__file__).resolve().parents[1]
    if installed != HERE:
        raise pytest.UsageError(
            f"iqa_robustness is imported from {installed}, not from this checkout ({HERE}); "
            'install the checkout with `pip install -e ".[dev]"` (the README\'s set-up)'
        )
