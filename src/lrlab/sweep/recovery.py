"""Crash recovery: a sweep killed mid-trial leaves its trials RUNNING. Each sweep tags its trials
with `<host>:<pid>` and records heartbeats for them (RDB storages), so that the next sweep can
fail them (their own process is gone on this host, or their heartbeat is stale elsewhere) and
run replacements."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from types import TracebackType

import optuna
from optuna.trial import TrialState

from lrlab.integrations.optuna_storage import HEARTBEAT_INTERVAL_S
from lrlab.integrations.process import owner_gone
from lrlab.sweep.study import WORKER_ATTR, trial_id

log = logging.getLogger("lrlab.sweep")


def heartbeats_enabled(storage: optuna.storages.BaseStorage) -> bool:
    """RDB storages opened by `open_storage` record heartbeats; journal and in-memory ones cannot."""
    return isinstance(storage, optuna.storages.RDBStorage) and bool(storage.get_heartbeat_interval())


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _abandoned_here(trial: optuna.trial.FrozenTrial, host: str) -> bool:
    return owner_gone(str(trial.user_attrs.get(WORKER_ATTR, "")), host)


def fail_abandoned_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark FAIL the trials left RUNNING by a dead sweep: on this host by process id, elsewhere by a
    heartbeat older than the storage's grace period. Returns their numbers."""
    host = socket.gethostname()
    failed = []
    for trial in _running(study):
        if _abandoned_here(trial, host):
            try:
                storage.set_trial_state_values(trial_id(storage, study, trial.number), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker recovered it first
            failed.append(trial.number)
    if heartbeats_enabled(storage):
        before = {t.number for t in _running(study)}
        optuna.storages.fail_stale_trials(study)
        failed += sorted(before - {t.number for t in _running(study)})
    if failed:
        log.warning(
            f"trials {failed} were left RUNNING by a sweep that died; marked FAIL (they will be re-run)"
        )
    return failed


class Heartbeat:
    """Records a heartbeat for the trials being run, in a thread, while the `with` block runs."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: Sequence[int]):
        self.storage, self.trial_ids = storage, list(trial_ids)
        self.enabled = heartbeats_enabled(storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            for trial in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial)
                except Exception as exc:
                    log.debug(f"heartbeat for trial id {trial} failed: {exc}")
            self._stop.wait(HEARTBEAT_INTERVAL_S)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()
