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
* tcmalloc already replaces ``malloc`` (``LD_PRELOAD``, which only the user can set, before the process
  starts): nothing, it keeps freed memory by itself;
* jemalloc already replaces it: unless ``MALLOC_CONF`` is set (the user's choice stands), its decay is
  turned off through ``mallctl`` (``arenas.dirty_decay_ms`` and ``muzzy_decay_ms`` -1, and each arena's):
  with its defaults jemalloc purges every buffer above its ``oversize_threshold`` (8 MiB) at once, and a
  positive decay time, however long, still leaves that arena purging at once;
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
#: allocators that replace glibc's when preloaded, and a function only each of them defines
PRELOADED = {"jemalloc": "mallctl", "tcmalloc": "tc_malloc"}

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
    """``"jemalloc"`` or ``"tcmalloc"`` when one replaces ``malloc`` in this process (``LD_PRELOAD``), else None.

    Told by the functions only they define, looked up in the process's global namespace (a copy bundled
    privately by some package, which replaces nothing, is not found there).
    """
    try:
        process = ctypes.CDLL(None)
    except OSError:  # no dlopen(NULL) (Windows)
        return None
    return next((name for name, symbol in PRELOADED.items() if hasattr(process, symbol)), None)


def _tune() -> str:
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        return f"the system's, unchanged ({ENV_VAR}=system)"
    preloaded = preloaded_allocator()
    if preloaded == "jemalloc":
        return _tune_jemalloc()
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


def _tune_jemalloc() -> str:
    if "MALLOC_CONF" in os.environ:
        return "jemalloc (preloaded) as MALLOC_CONF set it"
    never = ctypes.c_ssize_t(-1)
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except AttributeError:
        return "jemalloc (preloaded), unchanged (no mallctl)"

    def write(name: str) -> bool:
        return mallctl(name.encode(), None, None, ctypes.byref(never), ctypes.c_size_t(ctypes.sizeof(never))) == 0

    arenas = ctypes.c_uint()
    size = ctypes.c_size_t(ctypes.sizeof(arenas))
    mallctl(b"arenas.narenas", ctypes.byref(arenas), ctypes.byref(size), None, ctypes.c_size_t(0))
    done = write("arenas.dirty_decay_ms") and write("arenas.muzzy_decay_ms")  # arenas made from now on
    for i in range(arenas.value):  # those made already (one not made yet refuses and takes the default)
        write(f"arena.{i}.dirty_decay_ms")
        write(f"arena.{i}.muzzy_decay_ms")
    if not done:
        return "jemalloc (preloaded), unchanged (mallctl refused the decay times)"
    return "jemalloc (preloaded), decay off (mallctl)"
