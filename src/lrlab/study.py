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

from lrlab.engine import Callback, EpochResult

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

        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
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


def load_trial(storage_url: str, study_name: str, number: int) -> optuna.Trial:
    """The running trial `number` of `study_name`, with the pruner the sweeper recorded in the study."""
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name(study_name)
    pruner = make_pruner(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


class TrialReporter(Callback):
    """Reports `metric` after every epoch to the job's trial (step = epoch across stages) and raises
    `optuna.TrialPruned` when the study's pruner says stop. Multi-objective studies cannot prune,
    so nothing is reported there."""

    def __init__(self, trial: optuna.Trial, metric: str = "error_rate"):
        self.trial = trial
        self.metric = metric
        self.enabled = len(trial.study.directions) == 1

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        if not self.enabled:
            return
        self.trial.report(float(getattr(result, self.metric)), result.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned after epoch {result.epoch} "
                                     f"({self.metric} {getattr(result, self.metric):.4f})")
