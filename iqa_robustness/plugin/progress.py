"""A line per finished grid case on the terminal: cases done of the session's total, time elapsed and left.

The controller process (the only one under pytest-xdist) counts the grid's cases when they are
collected and writes one line each time a case ends, whatever its outcome, through pytest's terminal
reporter, so the lines show without ``-s``. The time left is the mean time per finished case times the
cases still to run: a rough figure while the first, cheaper attack families run. Inside a case,
:mod:`iqa_robustness.progress` reports images done (with ``-s`` or ``--log-cli-level=INFO``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from iqa_robustness.progress import format_duration

PREFIX = "[iqa-robustness]"


class CaseProgress:
    """Counts finished cases against the total and formats their lines.

    Args:
        write: where a line goes (the terminal reporter's ``write_line``); ``None`` writes nothing.
        clock: seconds, monotonic (a test's clock).
    """

    def __init__(self, write: Callable[[str], None] | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.clock = clock
        self.total = 0
        self.done = 0
        self._start: float | None = None
        self._case_start: dict[str, float] = {}

    def begin(self, total: int, notes: list[str]) -> None:
        """The grid's case count is known (once); ``notes`` say what grid it is."""
        if self._start is not None or total <= 0:
            return
        self.total = total
        self._start = self.clock()
        for note in notes:
            self._emit(note)
        self._emit(f"{total} case(s) to run; a line as each ends")

    def started(self, case_id: str) -> None:
        self._case_start.setdefault(case_id, self.clock())

    def ended(self, case_id: str) -> str:
        """The line for a case that ended (written when there is a writer)."""
        now = self.clock()
        start = self._start if self._start is not None else now
        took = now - self._case_start.pop(case_id, now)
        self.done += 1
        elapsed = now - start
        total = max(self.total, self.done)
        line = f"case {self.done}/{total} ended: {case_id} in {format_duration(took)}"
        line += f"; elapsed {format_duration(elapsed)}"
        if self.done < total:
            line += f", about {format_duration(elapsed / self.done * (total - self.done))} left"
        self._emit(line)
        return line

    def _emit(self, text: str) -> None:
        if self.write is not None:
            self.write(f"{PREFIX} {text}")
