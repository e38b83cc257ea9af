"""What torchrun told this process through its environment (WORLD_SIZE, RANK), read without
importing torch, so `lrlab --help` and config composition stay fast."""

from __future__ import annotations

import os


def launched_world_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    """This process's global rank as torchrun set it (RANK; 0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) if launched_world_size() > 1 else 0


def launched_local_world_size() -> int:
    """The number of processes torchrun started on this machine (LOCAL_WORLD_SIZE; 1 outside it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
