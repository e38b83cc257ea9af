"""The locks lrlab's processes share, with one timeout for all of them: the file lock beside an
SQLite file (under which `lrlab.integrations.stores` creates a store's schema), and the study lock
taken by every worker of one study, wherever it runs, for the few read-then-write steps that
concurrent workers must not interleave: enqueueing the baseline trials (each exactly once),
starting the sweep's parent run (one per study) and creating Optuna's tables in a fresh database
server.

Why a study lock: Optuna's storage API offers no compare-and-set for "enqueue unless already there"
(`enqueue_trial(skip_if_exists=True)` reads, then writes), and a unique token written to a study
attribute and read back does not help either (both writers can read their own token back). Two
workers started in the same second both see an empty study and both enqueue. So each storage gets
the lock its own backend provides, one that its holder's death releases (no stale lock blocks a
resumed sweep):

- PostgreSQL: a transaction-level advisory lock (`pg_advisory_xact_lock`) on a connection of its own,
  released at commit, or by the server when the connection drops;
- MySQL: `GET_LOCK` / `RELEASE_LOCK`, released with the connection too;
- an SQLite file: an OS file lock beside it (SQLite is shared by the processes of one machine only);
- a journal file: Optuna's own `JournalFileSymlinkLock` beside it, the lock the journal itself uses
  (works on NFS; a lock left by a killed process is broken after its grace period);
- anything else (an in-memory storage): a lock of this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

LOCK_TIMEOUT_S = 120
"""How long any lrlab lock is waited for before giving up."""
SERVER_DIALECTS = ("postgresql", "mysql")
_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def is_server_url(url: str) -> bool:
    """Whether `url` names a database server whose own advisory locks `study_lock` uses."""
    return url.split(":", 1)[0].split("+", 1)[0] in SERVER_DIALECTS


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL, None for any other URL (or an in-memory database)."""
    if not url.startswith("sqlite:///") or url.rstrip("/") == "sqlite:":
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def file_lock(path: str | Path) -> FileLock:
    """An OS file lock at `path` (a lock file beside the file it guards), waited for `LOCK_TIMEOUT_S`."""
    return FileLock(str(path), timeout=LOCK_TIMEOUT_S)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _advisory_key(key: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks (Python's `hash` is salted per process)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _server_lock(url: str, key: str) -> Iterator[None]:
    """The advisory lock of a database server, held on a connection of its own."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
                conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(key)})
                yield
            return
        name = _digest(key)[:60]  # MySQL lock names: at most 64 characters
        with engine.connect() as conn:
            got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": LOCK_TIMEOUT_S})
            if got.scalar() != 1:
                raise TimeoutError(f"could not take the study lock {key!r} in {LOCK_TIMEOUT_S} s")
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _local_lock(key: str) -> Iterator[None]:
    """A lock of this process, one per key (storages that live in one process only)."""
    with _LOCAL_GUARD:
        lock = _LOCAL.setdefault(key, threading.Lock())
    with lock:
        yield


@contextlib.contextmanager
def _journal_lock(path: Path, key: str) -> Iterator[None]:
    """Optuna's symlink lock, beside the journal file at `path` (the journal's own kind of lock)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(f"{path}.lrlab-{_digest(key)[:16]}")
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def study_lock(url: str, name: str) -> Iterator[None]:
    """Hold the lock named `name` of storage `url` (a study name, or any name for storage-wide
    steps) while the block runs; every worker of the study, on any machine, takes the same one."""
    key = f"lrlab:{name}"
    if url.startswith("journal://"):
        with _journal_lock(Path(url[len("journal://") :]), key):
            yield
    elif (path := sqlite_path(url)) is not None:
        with file_lock(f"{path}.lrlab-{_digest(key)[:16]}.lock"):
            yield
    elif is_server_url(url):
        with _server_lock(url, key):
            yield
    else:
        with _local_lock(f"{url}|{key}"):
            yield
