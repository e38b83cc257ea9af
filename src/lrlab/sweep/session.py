"""The ask/tell loop of a sweep, independent of Hydra: ask trials until the study holds `n_trials`
finished (complete or pruned) ones, hand each batch to a `run_batch` callable (the Hydra sweeper
adapts its launcher to it; tests pass a plain function), tell Optuna each outcome, replace failed
trials, and stop once more than `max_failure_rate` of `n_trials` failed. A run whose loss diverged
is recorded as pruned (attr `diverged`): it counts and is not retried."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lrlab.errors import ConfigError, LrlabError, TrainingDiverged
from lrlab.integrations.locks import study_lock
from lrlab.integrations.optuna_storage import open_storage
from lrlab.integrations.process import worker_id
from lrlab.sweep.baselines import FinderBaselines, enqueue_baselines, finder_rule
from lrlab.sweep.recovery import Heartbeat, fail_abandoned_trials
from lrlab.sweep.samplers import suggest
from lrlab.sweep.search_space import SearchSpace, format_value
from lrlab.sweep.settings import FINDER_ENTRY, OBJECTIVES, SweepSettings
from lrlab.sweep.study import (
    DONE,
    SEARCH_SOURCE,
    SOURCE,
    WORKER_ATTR,
    count,
    make_sampler,
    open_study,
    trial_id,
)

log = logging.getLogger("lrlab.sweep")

SUMMARY_ATTRS = ("metrics", "test", "train_seconds", "finder_seconds", "stages", "run_id", "output_dir")
SECONDS_KEYS = ("train_seconds", "finder_seconds")


class SweepFailed(LrlabError):
    """More trials failed than `max_failure_rate` allows."""


@dataclass(frozen=True)
class Outcome:
    """How one job ended: the summary a finished job returned, or the exception it raised
    (`optuna.TrialPruned` for a pruned trial)."""

    summary: Mapping[str, Any] | None = None
    error: BaseException | None = None


RunBatch = Callable[[list[list[str]]], list[Outcome]]
"""Runs one batch of jobs, each given as its override list; returns their outcomes in order."""


def objective_values(summary: Mapping[str, Any], metrics: Sequence[str]) -> list[float]:
    """The objective values of a job's summary: final metrics by name, or `train_seconds`,
    `finder_seconds`, `total_seconds`."""
    values = []
    for name in metrics:
        if name in summary.get("metrics", {}):
            values.append(float(summary["metrics"][name]))
        elif name == "total_seconds":
            values.append(sum(float(summary[key]) for key in SECONDS_KEYS))
        elif name in SECONDS_KEYS:
            values.append(float(summary[name]))
        else:
            raise ConfigError(
                f"hydra.sweeper.metric={name!r} is not something a run returns; use one of: "
                f"{', '.join(OBJECTIVES)}."
            )
    return values


class SweepSession:
    """One worker's part in filling a study: open it with `open`, then `run` batches of jobs."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        settings: SweepSettings,
        space: SearchSpace,
        url: str,
        recovered: Sequence[int] = (),
    ):
        self.study, self.storage, self.settings, self.space, self.url = study, storage, settings, space, url
        self.recovered = list(recovered)  # trials a dead sweep left RUNNING, failed when this one opened

    @classmethod
    def open(
        cls,
        settings: SweepSettings,
        space: SearchSpace,
        url: str,
        name: str,
        sweep_dir: Path,
        storage: optuna.storages.BaseStorage | None = None,
    ) -> SweepSession:
        """Create or resume study `name` in `url`, fail trials a dead sweep left RUNNING, and enqueue
        the baseline trials it does not hold yet (under the study's lock: workers started together
        enqueue each baseline once). `settings` must be validated."""
        storage = storage or open_storage(url)
        study = open_study(storage, url, name, settings, space, sweep_dir)
        recovered = fail_abandoned_trials(study, storage)
        rules = settings.rules() if FINDER_ENTRY in settings.enqueue else []
        with study_lock(url, name):
            enqueue_baselines(study, settings.enqueue, rules, settings.n_trials)
        return cls(study, storage, settings, space, url, recovered)

    def run(
        self, run_batch: RunBatch, finder: FinderBaselines | None = None, extra_overrides: Sequence[str] = ()
    ) -> int:
        """Run batches of up to `n_jobs` trials until the study holds `n_trials` finished ones (other
        workers' running trials count as taken); returns how many trials this worker ran."""
        finder = finder or FinderBaselines()
        n_trials = self.settings.n_trials
        log.info(
            f"study {self.study.study_name!r} in {self.url}: {count(self.study, DONE)}/{n_trials} trials "
            f"finished; searching {self.space.describe()}"
        )
        failures, ran = 0, 0
        while (remaining := self._remaining()) > 0:
            trials = self.ask(min(self.settings.n_jobs, remaining))
            if not trials:
                continue
            started = time.perf_counter()
            batch = [self.overrides(trial, finder, extra_overrides) for trial in trials]
            outcomes = self._launch(trials, batch, run_batch)
            ran += len(trials)
            failed = None
            for trial, outcome in zip(trials, outcomes, strict=True):
                state = self.record(trial, outcome, finder)
                if state == TrialState.FAIL:
                    failures, failed = failures + 1, self._frozen(trial)
                log.info(self._trial_line(trial, state, time.perf_counter() - started))
            if failed is not None and failures > self.settings.max_failure_rate * n_trials:
                raise SweepFailed(
                    f"{failures} trials failed, more than max_failure_rate={self.settings.max_failure_rate} "
                    f"of n_trials={n_trials}; the last error (trial {failed.number}): "
                    f"{failed.user_attrs.get('error')}"
                )
        return ran

    def _remaining(self) -> int:
        """Trials still to ask: `n_trials` less the finished and the running ones (after failing
        those a dead sweep left RUNNING meanwhile)."""
        fail_abandoned_trials(self.study, self.storage)
        done, running = count(self.study, DONE), count(self.study, (TrialState.RUNNING,))
        remaining = self.settings.n_trials - done - running
        if remaining <= 0 and running:
            log.info(f"{running} trial(s) still running in other workers; this worker is done")
        return remaining

    def ask(self, n: int) -> list[optuna.Trial]:
        """Ask `n` trials, the sampler reseeded per trial number; trials beyond the study's
        `n_trials` (another worker asked at the same time) go back to WAITING for whoever asks next."""
        worker = worker_id()
        asked = []
        for _ in range(n):
            offset = len(self.study.get_trials(deepcopy=False))
            self.study.sampler = make_sampler(self.settings, self.space, offset=offset)
            trial = self.study.ask()
            if trial.number != offset:  # another worker asked meanwhile: draw this number's values
                self.study.sampler = make_sampler(self.settings, self.space, offset=trial.number)
            trial.set_user_attr(WORKER_ATTR, worker)
            asked.append(trial)
        taken = sorted(
            t.number for t in self.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
        )
        allowed = set(taken[: self.settings.n_trials])
        kept = []
        for trial in asked:
            if SOURCE not in trial.user_attrs:  # also on one handed back: every trial names its source
                trial.set_user_attr(SOURCE, SEARCH_SOURCE)
            if trial.number not in allowed:
                self.storage.set_trial_state_values(self._id(trial), TrialState.WAITING)
                continue
            kept.append(trial)
        return kept

    def overrides(self, trial: optuna.Trial, finder: FinderBaselines, extra: Sequence[str] = ()) -> list[str]:
        """The job's command line: the fixed overrides, the trial's values (a finder trial: the
        range test's rule), and the trial's identity, so that the job can report to it."""
        source = str(trial.user_attrs.get(SOURCE, SEARCH_SOURCE))
        overrides = list(self.space.fixed)
        rule = finder_rule(source)
        if rule is not None:
            overrides += finder.overrides(rule)
        else:
            overrides += [self.space.override(k, suggest(trial, k, d)) for k, d in self.space.params.items()]
        return [
            *overrides,
            f"trial.storage={format_value(self.url)}",
            f"trial.study={format_value(self.study.study_name)}",
            f"trial.number={trial.number}",
            f"trial.source={format_value(source)}",
            f"trial.metric={self.settings.metrics[0]}",
            *extra,
        ]

    def _launch(
        self, trials: list[optuna.Trial], batch: list[list[str]], run_batch: RunBatch
    ) -> list[Outcome]:
        """Run the batch with heartbeats; if running it raises (Ctrl-C, a launcher error), its
        trials end FAIL rather than RUNNING."""
        try:
            with Heartbeat(self.storage, [self._id(t) for t in trials]):
                outcomes = list(run_batch(batch))
            if len(outcomes) != len(trials):
                raise RuntimeError(f"run_batch returned {len(outcomes)} outcomes for {len(trials)} jobs")
        except BaseException:
            for trial in trials:
                self._fail_quietly(trial)
            raise
        return outcomes

    def record(self, trial: optuna.Trial, outcome: Outcome, finder: FinderBaselines) -> TrialState:
        """Tell Optuna how the job ended; a finder trial's params are the LRs its range tests chose."""
        if outcome.error is None:
            summary = dict(outcome.summary or {})
            try:
                values = objective_values(summary, self.settings.metrics)
            except ConfigError:
                self.study.tell(trial, state=TrialState.FAIL)
                raise
            if finder_rule(str(trial.user_attrs.get(SOURCE, ""))) is not None:
                finder.record_params(self.storage, self._id(trial), summary, self.space)
            for key in SUMMARY_ATTRS:
                trial.set_user_attr(key, summary.get(key))
            self.study.tell(trial, values)
            return TrialState.COMPLETE
        if isinstance(outcome.error, TrainingDiverged):
            # Divergence is the settings' result, not a crash: a retry would diverge again (and a
            # grid would re-ask the same point forever), so the trial counts, as pruned.
            trial.set_user_attr("diverged", str(outcome.error)[:2000])
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        if isinstance(outcome.error, optuna.TrialPruned):
            trial.set_user_attr("pruned", str(outcome.error))
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        trial.set_user_attr("error", f"{type(outcome.error).__name__}: {outcome.error}"[:2000])
        self.study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL

    def _id(self, trial: optuna.Trial) -> int:
        return trial_id(self.storage, self.study, trial.number)

    def _frozen(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
        return self.storage.get_trial(self._id(trial))

    def _fail_quietly(self, trial: optuna.Trial) -> None:
        try:
            self.study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:
            log.debug(f"could not fail trial {trial.number}: {exc}")

    def _trial_line(self, trial: optuna.Trial, state: TrialState, seconds: float) -> str:
        """`[finished/n_trials] trial N (source) params: outcome (seconds)` for the sweep's log."""
        frozen = self._frozen(trial)
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in frozen.params.items()
        )
        if state == TrialState.COMPLETE:
            outcome = "value " + ", ".join(f"{v:.4f}" for v in frozen.values)
        elif state == TrialState.PRUNED:
            outcome = f"pruned at step {frozen.last_step}"
        else:
            outcome = f"FAILED ({frozen.user_attrs.get('error', '')})"
        return (
            f"[{count(self.study, DONE)}/{self.settings.n_trials}] trial {trial.number} "
            f"({frozen.user_attrs.get(SOURCE)}) {params}: {outcome} ({seconds:.0f} s)"
        )
