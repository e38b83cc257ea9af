"""Optuna storages and pruners, shared by the sweeper (`lrlab.sweep`), its jobs
(`lrlab.integrations.optuna`) and the report: a storage from a URL, and the study's pruner from
the spec the sweeper records in it (one table, name -> class). They live in the integrations layer
so that a job reaches its trial without importing the sweep. Importing this module loads Optuna
but not torch (the sweeper process never imports torch)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import optuna

from lrlab.errors import ConfigError
from lrlab.integrations.locks import is_server_url, study_lock
from lrlab.integrations.stores import check_writable, open_sqlite

# lrlab records trial heartbeats itself (not through Study.optimize), which Optuna flags as experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

PRUNER_ATTR = "lrlab.pruner"
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
}
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60
TABLES_LOCK = "optuna-tables"  # the storage-wide lock under which a server database's tables are created


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: any SQLAlchemy RDB URL (sqlite:///, postgresql://, mysql://),
    or `journal:///path/to/file.log` (a journal file, for file systems where SQLite locking is unsafe).
    Heartbeats are on, so a trial whose process died can be recognised and failed."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal://") :])
        check_writable(path, "Optuna journal", "hydra.sweeper.storage")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    _check_dialect(url)
    return open_sqlite(url, "Optuna storage", lambda: _open_rdb(url), key="hydra.sweeper.storage")


def _check_dialect(url: str) -> None:
    """ConfigError unless the URL's scheme is a database SQLAlchemy knows (otherwise a traceback
    from deep inside it); a missing driver (`+psycopg`) is `require_driver`'s to explain."""
    from sqlalchemy.dialects import registry

    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        registry.load(scheme.split("+", 1)[0])
    except Exception:  # NoSuchModuleError
        raise ConfigError(
            f"hydra.sweeper.storage: {scheme + '://' if scheme else repr(url)} is not a storage Optuna "
            "can open. Use sqlite:///path/study.db, journal:///path/study.log, or a postgresql:// or "
            "mysql+pymysql:// URL."
        ) from None


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats. On a database server, one worker at a time opens it: Optuna
    creates its tables on first use, and two workers creating them at once on a fresh PostgreSQL
    database collide (duplicate key in pg_type). SQLite files are serialised by `open_sqlite`."""
    with study_lock(url, TABLES_LOCK) if is_server_url(url) else contextlib.nullcontext():
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )


def make_pruner(spec: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from `{"name": <a name in PRUNERS>, **kwargs}` (the spec the sweeper records in the
    study, so that every job prunes with the same rule)."""
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "none")
    if name not in PRUNERS:
        raise ConfigError(f"pruner {name!r} is not known; choose one of: {', '.join(PRUNERS)}.")
    try:
        return PRUNERS[name](**spec)
    except TypeError as exc:
        raise ConfigError(f"hydra.sweeper.pruner_kwargs for pruner {name!r}: {exc}") from None
