"""Optuna study plumbing shared by the sweeper, its jobs and the report: opening a storage from a
URL, building the study's pruner from what the sweeper stored in it, and the job-side callback
that reports each epoch to the job's trial (Optuna's integration callbacks need the Trial object
in-process, which a Hydra launcher in another process or machine cannot hand over)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna

log = logging.getLogger("lrlab")
# lrlab records trial heartbeats itself (not through Study.optimize), which Optuna flags as experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

PRUNER_ATTR = "lrlab.pruner"
PRUNERS = ("none", "median", "hyperband", "successive_halving")
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: any SQLAlchemy RDB URL (sqlite:///, postgresql://, mysql://),
    or `journal:///path/to/file.log` (a journal file, for file systems where SQLite locking is unsafe).
    Heartbeats are on, so a trial whose process died can be recognised and failed."""
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=HEARTBEAT_GRACE_S,
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
    )


def make_pruner(spec: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from `{"name": none|median|hyperband|successive_halving, **kwargs}`."""
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "none")
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(**spec)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**spec)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**spec)
    raise ValueError(f"pruner {name!r} is not known; choose one of: {', '.join(PRUNERS)}")
