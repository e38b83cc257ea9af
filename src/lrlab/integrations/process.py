"""Which process owns a record: `<host>:<pid>` of this process, and whether such an owner is gone.
Sweeps tag their Optuna trials and runs tag their MLflow runs with it, so that a later process on
the same host can end what a killed one (kill -9, the OOM killer) left RUNNING."""

from __future__ import annotations

import os
import socket


def worker_id() -> str:
    """`<host>:<pid>` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(owner: str, host: str | None = None) -> bool:
    """Whether `owner` (`<host>:<pid>`) is a process of this host that no longer exists (False for
    another host's or an unreadable owner: those cannot be checked from here)."""
    name, _, pid = str(owner).rpartition(":")
    return name == (host or socket.gethostname()) and pid.isdigit() and not pid_alive(int(pid))
