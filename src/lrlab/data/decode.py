"""Decoding many image files at once. PIL releases the GIL while it decodes, so a thread pool
scales with the cores without copying decoded images between processes (a process pool would)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def map_in_threads(
    fn: Callable[[Any], Any], items: Sequence[Any], desc: str | None = None, workers: int | None = None
) -> list[Any]:
    """`[fn(item) for item in items]`, in order, on `workers` threads (None: one per usable core, at
    most 32), with a progress bar named `desc` when stderr is a terminal."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(workers or max(1, min(32, usable_cores()))) as pool:
        results = pool.map(fn, items)
        if desc is not None:
            results = tqdm(results, total=len(items), desc=desc, leave=False, disable=None)
        return list(results)
