"""The CPU allocator setting of a suite run: freed buffers stay in the process, only where the suite runs."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

#: page faults of ten 64 MiB buffers allocated and freed in turn (after one untimed), then the setting
FAULTS = """
import resource, sys
import torch
if sys.argv[1] == "session":
    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.resources import Resources
    print(Resources(SuiteConfig(device="cpu")).allocator)
else:
    print("none")

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        buffer = torch.ones(16 << 20)  # 64 MiB, every page written
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
print(faults())
"""


def faults(mode: str, **env: str) -> tuple[str, int]:
    """The allocator a fresh process reports and the page faults of :data:`FAULTS` in it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "LD_PRELOAD"))}
    environment.pop("IQA_ROBUSTNESS_ALLOCATOR", None)
    proc = subprocess.run(
        [sys.executable, "-c", FAULTS, mode],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    setting, count = proc.stdout.split("\n")[-3:-1]
    return setting, int(count)


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt; other C libraries are left as they are")
def test_a_cpu_session_keeps_freed_buffers_in_the_process() -> None:
    _, untouched = faults("none")
    setting, tuned = faults("session")

    assert setting == "glibc, trim and mmap thresholds 1 GiB (mallopt)"
    # glibc's defaults give every 64 MiB buffer fresh pages: 16 384 faults each
    assert untouched > 10 * 16_000
    assert tuned < untouched / 20


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt; other C libraries are left as they are")
def test_the_allocator_can_be_left_as_it_is() -> None:
    setting, count = faults("session", IQA_ROBUSTNESS_ALLOCATOR="system")
    assert setting == "the system's, unchanged (IQA_ROBUSTNESS_ALLOCATOR=system)"
    assert count > 10 * 16_000

    setting, _ = faults("session", MALLOC_TRIM_THRESHOLD_=str(1 << 30), MALLOC_MMAP_THRESHOLD_=str(1 << 30))
    assert setting == "glibc as MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_ set it"


@pytest.mark.parametrize("name", ["jemalloc", "tcmalloc"])
def test_a_preloaded_allocator_is_kept(name: str) -> None:
    folders = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
    found = [p for d in folders for p in Path(d).glob(f"lib{name}*.so*") if "debug" not in p.name]
    if not found:
        pytest.skip(f"no lib{name} on this machine (Debian: apt-get install libjemalloc2 libtcmalloc-minimal4)")
    preload = str(sorted(found)[0])
    setting, count = faults("session", LD_PRELOAD=preload)
    assert count < 10 * 16_000
    if name == "tcmalloc":
        assert setting == "tcmalloc (preloaded)"  # it keeps freed memory by itself
        return
    assert setting == "jemalloc (preloaded), decay off (mallctl)"
    _, untouched = faults("none", LD_PRELOAD=preload)
    assert untouched > 10 * 16_000  # jemalloc's defaults purge buffers over 8 MiB at once
