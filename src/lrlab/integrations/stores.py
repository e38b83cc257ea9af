"""The databases lrlab records into (MLflow's store, Optuna's storage): a driver check for server
URLs, and crash-safe, concurrency-safe creation of SQLite files: one process at a time creates a
file's schema, under a file lock, with SIGINT and SIGTERM held until the schema is complete; a file
left half-built by an older crash is moved aside (when it holds no runs or trials) or explained.
MLflow and Optuna migrate a new SQLite file without a lock of their own, so two first runs in a
fresh folder can break it; hence this module. The file lock, its timeout and `sqlite_path` are
those of `lrlab.integrations.locks`, which the sweep's study lock uses too."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from lrlab.errors import ConfigError, LrlabError, describe
from lrlab.integrations.locks import file_lock, sqlite_path

log = logging.getLogger(__name__)
T = TypeVar("T")
RECORD_TABLES = ("runs", "trials")  # what a store holds that must never be thrown away


class StoreError(LrlabError):
    """A tracking store or study storage that cannot be opened or repaired."""


DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "MySQLdb"}  # SQLAlchemy 2.1's defaults
HINTS = {
    "postgresql": "pip install 'lrlab[postgres]' (psycopg 3)",
    "mysql": "pip install 'lrlab[mysql]' (PyMySQL) and write the URL as mysql+pymysql://...",
}


def require_driver(url: str, key: str) -> None:
    """A database URL whose SQLAlchemy driver is not installed: StoreError naming the key and the
    package to install (`postgresql://` means psycopg 3 in SQLAlchemy 2.1, not psycopg2)."""
    import importlib.util
    import re

    dialect, _, driver = url.partition("://")[0].partition("+")
    if dialect not in DEFAULT_DRIVERS:
        return
    module = {"mysqldb": "MySQLdb", "": DEFAULT_DRIVERS[dialect]}.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        shown = re.sub(r"//[^@/]*@", "//***@", url)
        raise StoreError(
            f"{key}={shown!r} needs the database driver {module!r}, which is not installed: "
            f"{HINTS[dialect]}, or name an installed driver: {dialect}+<driver>://."
        )


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (they are delivered then, not lost). Python
    runs signal handlers in the main thread whichever thread the kernel picked, so swapping in a
    recording handler defers them reliably (blocking with pthread_sigmask would not: another
    thread, e.g. torch's, can take the signal). Outside the main thread: no deferral."""
    held = (signal.SIGINT, signal.SIGTERM)
    pending: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in held}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _records(path: Path) -> int | None:
    """Rows in the file's run/trial tables (0 when it has none); None when SQLite cannot read the
    file at all (a damaged header, a file cut short): it may hold runs nobody can count."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            return sum(
                db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in RECORD_TABLES if t in tables
            )
    except sqlite3.Error:
        return None


def _recovery(path: Path) -> str:
    """The one-line command that salvages what SQLite can still read of a damaged file."""
    return f"sqlite3 {path} .recover | sqlite3 {path.with_name(path.stem + '.recovered.db')}"


def check_writable(path: Path, what: str, key: str) -> None:
    """ConfigError (one paragraph naming `key`) when the file store at `path` cannot be written:
    its folder, or the nearest folder above that exists, is read-only (locks and journals are
    created beside the file), or the file itself is."""
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    blocked = folder if folder is not None and not os.access(folder, os.W_OK) else None
    if blocked is None and path.exists() and not os.access(path, os.W_OK):
        blocked = path
    if blocked is not None:
        raise ConfigError(
            f"{key}: the {what} {path} cannot be written, because {blocked} is read-only (a "
            f"read-only mount or missing permissions; its lock file goes beside it). Point {key} at "
            "a writable folder."
        )


def open_sqlite(
    url: str, what: str, opener: Callable[[], T], reset: Callable[[], None] | None = None, key: str = "url"
) -> T:
    """Run `opener` (which creates or migrates the SQLite file of `url` if needed and returns the
    opened store) under the file's lock with signals held. If it fails on an existing file that
    holds no records, the file is moved aside (`<name>.broken-<time>`), `reset` drops whatever the
    library cached for it, and `opener` runs again on a fresh one; with records, StoreError explains
    what to do. Other URLs run `opener` once their driver is found (`key`: the URL's config key)."""
    path = sqlite_path(url)
    if path is None:
        require_driver(url, key)
        return opener()
    check_writable(path, what, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(f"{path}.lock"), signals_held():
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        existed = path.exists()
        try:
            return opener()
        except Exception as exc:
            if not existed:
                raise
            records = _records(path)
            if records:
                raise StoreError(
                    f"The {what} {path} cannot be opened ({describe(exc, 200)}) "
                    f"and holds {records} run/trial record(s), so lrlab neither moves nor deletes it. "
                    "Copy it away, then either point lrlab at a new file (tracking.uri / "
                    f"hydra.sweeper.storage) or repair it with the owning tool (`mlflow db upgrade {url}` "
                    f"for MLflow), or salvage its rows: {_recovery(path)}"
                ) from exc
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            if reset is not None:
                reset()
            if records is None:
                log.warning(
                    "The %s %s cannot be read at all (%s; %d bytes), so whether it held runs or "
                    "trials is unknown. It was moved to %s, untouched, and a new one created; to salvage "
                    "its rows: %s, then point lrlab at the recovered file.",
                    what, path, describe(exc, 200), aside.stat().st_size, aside, _recovery(aside),
                )  # fmt: skip
            else:
                log.warning(
                    "The %s %s was left half-built by an interrupted first run and holds no runs or "
                    "trials; it was moved to %s and a new one created.",
                    what, path, aside,
                )  # fmt: skip
            return opener()
