"""Progress of a long case on the terminal: images done, rate and time left, every few seconds.

The lines go to the ``iqa_robustness`` logger at INFO level when that level is on (``pytest
--log-cli-level=INFO``, ``iqa-robustness -v``), else straight to standard error, which pytest shows
with ``-s``. A case that ends within the first interval prints nothing.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("iqa_robustness.progress")

#: seconds between two progress lines of one case
INTERVAL = 10.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Counts units done out of a known total and reports at most once per ``interval`` seconds.

    Args:
        label: what is running (the case id, or ``uap vs niqe`` for training).
        total: units expected (images, clips, optimisation steps).
        unit: their name in the lines.
        interval: seconds between lines; the last line comes with the last unit when any came before.
    """

    def __init__(self, label: str, total: int, unit: str = "images", interval: float = INTERVAL) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last = self._start
        self._reported = False

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total and self.done >= self.total
        if now - self._last >= self.interval or (finished and self._reported):
            self._last = now
            self._reported = True
            emit(self.line(now, note))

    def line(self, now: float | None = None, note: str = "") -> str:
        elapsed = (time.monotonic() if now is None else now) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.3g} {self.unit}/s"
        if rate > 0 and self.total and self.done < self.total:
            text += f", about {format_duration((self.total - self.done) / rate)} left"
        elif self.done >= self.total:
            text += f", done in {format_duration(elapsed)}"
        return f"{text}{', ' + note if note else ''}"


def emit(text: str) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s", text)
    else:
        print(f"[iqa-robustness] {text}", file=sys.stderr, flush=True)
