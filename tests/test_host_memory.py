"""Freed host memory is kept for reuse under glibc (no page faults to get it back on the next
step), and lrlab steps aside where the user chose an allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lrlab.core.host_memory import user_chose_allocator

# Allocates and frees a 256 MiB buffer, then prints how much of it the process still holds (MiB).
HELD_AFTER_FREE = """
import os, sys
from lrlab.core.host_memory import hold_freed_memory
applied = hold_freed_memory() if sys.argv[1] == "hold" else False
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident()
buffer = bytearray(256 * 2**20)
del buffer
print(applied, round(resident() - before))
"""


def _held(mode: str, **environ: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    out = subprocess.run(
        [sys.executable, "-c", HELD_AFTER_FREE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env | environ,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt, Linux only")
def test_freed_memory_stays_with_the_process_only_when_held() -> None:
    applied, kept = _held("default")
    assert applied == "False" and kept < 64  # glibc gave the mmapped buffer back at once
    applied, kept = _held("hold")
    assert applied == "True" and kept >= 250  # the heap kept it for the next allocation
    applied, kept = _held("hold", MALLOC_ARENA_MAX="2")
    assert applied == "False" and kept < 64  # the user's own malloc settings win


def test_the_users_allocator_choice_is_respected() -> None:
    assert not user_chose_allocator({"PATH": "/usr/bin"})
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert user_chose_allocator({"LD_PRELOAD": "libtcmalloc_minimal.so.4"})
    assert user_chose_allocator({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
