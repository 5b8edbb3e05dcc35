"""The CPU memory allocator of a suite run: keep the metric's large buffers in the process between calls.

A metric's forward pass on the CPU allocates and frees buffers of many megabytes (a network's feature
maps). glibc's ``malloc`` serves each request above its mmap threshold with fresh pages from the system
and hands them back on ``free``, and trims the heap whenever more than its trim threshold lies free at
its top; every call of the metric then page-faults its whole working set in again. Measured with
cnniqa-live on 256 x 256 images on two threads: 10 000 page faults per call at batch 5 (350 000 at
batch 64), and a forward pass per image 1.5 to 2 times slower at batch 5 than at batch 1, so a batched
black-box search was slower than the same search one image at a time. PyTorch's CPU performance guide
recommends jemalloc or tcmalloc for the same reason (docs/speed.md, "Memory allocator", has the figures
of all four settings).

:func:`tune_allocator` removes the churn where the platform allows it, once per process, and only in a
process that runs the suite on the CPU (a pytest session that runs grid cases, ``iqa-robustness bench``):
the pytest plugin is loaded by every pytest run of an environment that has the package, and changes
nothing process-wide in a run that does not run the grid. What it does, in order:

* ``IQA_ROBUSTNESS_ALLOCATOR=system`` in the environment: nothing (the allocator stays as it is);
* jemalloc or tcmalloc already replaces ``malloc`` (``LD_PRELOAD``, which only the user can set, before
  the process starts): nothing, they keep freed memory by themselves;
* glibc with ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` set: nothing, the user's choice stands;
* glibc otherwise: ``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` and ``mallopt(M_MMAP_THRESHOLD, 1 GiB)``
  (through ctypes; the same as both environment variables at start-up): buffers under 1 GiB come from the
  heap and up to 1 GiB of freed memory stays in the process for the next call. Both are needed: a high
  mmap threshold alone moves the buffers to the heap, whose top is then trimmed after every call;
* any other C library (macOS, musl, Windows): nothing; no equivalent call exists.

The cost is memory: a process keeps up to 1 GiB it freed instead of returning it at once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameters of glibc's ``<malloc.h>``
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: both thresholds, in bytes: above any single buffer of the metrics on images the suite attacks on a CPU
THRESHOLD = 1 << 30
#: the environment variable that leaves the allocator as it is (value ``system``)
ENV_VAR = "IQA_ROBUSTNESS_ALLOCATOR"
#: glibc's own environment variables for the two thresholds (read once, at process start-up)
GLIBC_ENV_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
#: allocators that keep freed memory by themselves when preloaded
PRELOADED = ("jemalloc", "tcmalloc")

_setting: str | None = None


def tune_allocator() -> str:
    """Keep freed memory in the process (see the module docstring); once per process.

    Returns:
        What the process's allocator is now, in words (for the log and the bench's header), e.g.
        ``"glibc, trim and mmap thresholds 1 GiB (mallopt)"`` or ``"tcmalloc (preloaded)"``.
    """
    global _setting
    if _setting is None:
        _setting = _tune()
        log.info("memory allocator: %s", _setting)
    return _setting


def preloaded_allocator() -> str | None:
    """``"jemalloc"`` or ``"tcmalloc"`` when one is loaded into this process (by ``LD_PRELOAD``), else None."""
    try:
        with open("/proc/self/maps") as maps:
            loaded = maps.read()
    except OSError:  # no procfs (not Linux): look at what the user asked to preload
        loaded = os.environ.get("LD_PRELOAD", "")
    return next((name for name in PRELOADED if f"lib{name}" in loaded), None)


def _tune() -> str:
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        return f"the system's, unchanged ({ENV_VAR}=system)"
    preloaded = preloaded_allocator()
    if preloaded is not None:
        return f"{preloaded} (preloaded)"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return f"the system's, unchanged (no glibc on {sys.platform})"
    given = [name for name in GLIBC_ENV_VARS if name in os.environ]
    if given:
        return f"glibc as {' and '.join(given)} set it"
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1 and libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    except (OSError, AttributeError) as exc:
        return f"glibc, unchanged (mallopt unavailable: {exc})"
    if not done:
        return "glibc, unchanged (mallopt refused the thresholds)"
    return f"glibc, trim and mmap thresholds {THRESHOLD >> 30} GiB (mallopt)"
