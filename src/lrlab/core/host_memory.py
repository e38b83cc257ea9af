"""Keep freed host memory for reuse, where the C library is glibc.

Training on the CPU frees and allocates the same large activation buffers every step. glibc's
defaults give each buffer above its mmap threshold (at most 32 MiB) back to the OS and trim the
heap, so every step pays page faults to get the memory back: in a Lite0 step benchmark at 128 px,
batch 32 (2-core AMD EPYC), 5-7 s of kernel time in runs of 35-40 s, and 60-72 images/s against
76-82 with the memory held. PyTorch's CPU tuning guide preloads jemalloc or tcmalloc for this; `mallopt` does
the same job with the allocator already loaded, and this module steps aside where the user has
chosen (`LD_PRELOAD`, `MALLOC_*` variables or glibc's malloc tunables).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before any trimming


def user_chose_allocator(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the environment already tunes or replaces malloc."""
    if "malloc" in environ.get("LD_PRELOAD", "") or "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(name.startswith("MALLOC_") for name in environ)


def hold_freed_memory() -> bool:
    """Make glibc serve every allocation from its heap and never shrink it, so freed buffers are
    reused without page faults; the process keeps its peak heap size until it exits. Returns
    whether it applied (False off Linux, without glibc, or where the user chose an allocator)."""
    if not sys.platform.startswith("linux") or user_chose_allocator():
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: their mallopt differs or is absent
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
