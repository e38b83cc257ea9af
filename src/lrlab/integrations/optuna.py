"""The job side of a sweep: a Hydra job finds its Optuna trial from `trial.*` in its config and
reports each epoch to it (Optuna's own integration callbacks need the Trial object in-process,
which a launcher in another process or machine cannot hand over). The storage and the pruner
come from `lrlab.integrations.optuna_storage`, so a job never imports the sweep itself."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from lrlab.core.types import Callback, EpochResult
from lrlab.errors import RunPruned
from lrlab.integrations.optuna_storage import PRUNER_ATTR, make_pruner, open_storage


def load_trial(storage_url: str, study_name: str, number: int) -> optuna.Trial:
    """The running trial `number` of `study_name`, with the pruner the sweeper recorded in the study."""
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name(study_name)
    pruner = make_pruner(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


class TrialPruned(RunPruned, optuna.TrialPruned):
    """The study's pruner stopped this trial: Optuna's own signal for the sweeper, and lrlab's
    `RunPruned` for the run's lifecycle (which ends the run KILLED without importing Optuna)."""


class TrialReporter(Callback):
    """Reports `metric` after every epoch to the job's trial (step = epoch across stages) and raises
    `TrialPruned` (an `optuna.TrialPruned`) when the study's pruner says stop. Multi-objective
    studies cannot prune, so nothing is reported there."""

    def __init__(self, trial: optuna.Trial, metric: str = "error_rate"):
        self.trial = trial
        self.metric = metric
        self.enabled = len(trial.study.directions) == 1

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        if not self.enabled:
            return
        self.trial.report(float(getattr(result, self.metric)), result.epoch)
        if self.trial.should_prune():
            raise TrialPruned(
                f"trial {self.trial.number} pruned after epoch {result.epoch} "
                f"({self.metric} {getattr(result, self.metric):.4f})"
            )


class StudyCurveStore:
    """Range-test curves kept as user attributes of the sweep's Optuna study, so every worker of
    the sweep (on any machine sharing its storage) reuses them (a lrlab.finder CurveStore)."""

    PREFIX = "lr_find_curve:"

    def __init__(self, storage_url: str, study_name: str):
        self.storage = open_storage(storage_url)
        self.study_id = self.storage.get_study_id_from_name(study_name)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.storage.get_study_user_attrs(self.study_id).get(self.PREFIX + key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.storage.set_study_user_attr(self.study_id, self.PREFIX + key, value)


class SuccessiveHalvingJudge:
    """The judge of an `lr=auto` race (`lrlab.train.race.RaceJudge`): each candidate LR is a trial
    of an in-memory study under Optuna's `SuccessiveHalvingPruner` (one rung per epoch from the
    first, `reduction_factor` apart), which says when a candidate trails and should stop."""

    def __init__(self, reduction_factor: int = 3):
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=reduction_factor)
        in_memory_log = logging.getLogger("optuna.storages._in_memory")  # its "new study created" line
        level = in_memory_log.level
        in_memory_log.setLevel(logging.WARNING)  # the race's study is internal: the console names the race
        try:
            self.study = optuna.create_study(direction="minimize", pruner=pruner)
        finally:
            in_memory_log.setLevel(level)

    def enter(self, lr: float) -> optuna.Trial:
        trial = self.study.ask()
        trial.set_user_attr("lr", lr)
        return trial

    def report(self, trial: optuna.Trial, epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()

    def finish(self, trial: optuna.Trial, value: float | None) -> None:
        if value is None:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, value)
