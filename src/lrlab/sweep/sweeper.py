"""lrlab's Optuna sweeper (the body of the `lrlab_optuna` Hydra sweeper plugin), written on
Optuna's ask/tell API because the PyPI Hydra Optuna plugin pins optuna<3, cannot prune, cannot
enqueue baselines and adds `n_trials` on every resume instead of completing the study.

Each batch of up to `n_jobs` asked trials goes to the configured Hydra launcher as one batch;
every job gets its trial's identity in its config (`trial.*`) so it can report per-epoch metrics
and be pruned; the sweeper tells Optuna the outcome, tags MLflow, and at the end writes
`optimization_results.yaml` and the finder-vs-search report into the sweep directory.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from lrlab.errors import ConfigError, LrlabError
from lrlab.sweep.search_space import SearchSpace, format_value, parse_search_space
from lrlab.sweep.storage import (
    HEARTBEAT_INTERVAL_S,
    PRUNER_ATTR,
    PRUNERS,
    make_pruner,
    open_storage,
)

log = logging.getLogger("lrlab.sweep")

SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc", "gp", "nsgaii")  # grid: see _AskTellGridSampler
FINDER_RULES = ("valley", "steep", "minimum", "slide")
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SOURCE = "source"
WORKER_ATTR = "lrlab.worker"
FIXED_ATTR = "lrlab.fixed_overrides"
PARENT_ATTR = "lrlab.mlflow_parent_run"
RESULTS_FILE = "optimization_results.yaml"
SEARCH_SECONDS_KEYS = ("train_seconds", "finder_seconds")


class SweepFailed(LrlabError):
    """More trials failed than `max_failure_rate` allows."""


@dataclass
class SweepSettings:
    """The `hydra.sweeper` config (see `hydra_plugins.lrlab_optuna_sweeper`)."""

    study_name: str | None = None
    storage: str | None = None
    direction: Any = "minimize"
    metric: Any = "error_rate"
    n_trials: int = 20
    n_jobs: int = 1
    sampler: str = "tpe"
    seed: int | None = 0
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    enqueue: list[Any] = field(default_factory=list)
    finder_rules: list[str] = field(default_factory=lambda: list(FINDER_RULES))
    max_failure_rate: float = 0.5
    params: dict[str, Any] = field(default_factory=dict)
    report: bool = True

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"hydra.sweeper.sampler={self.sampler!r} is not valid; choose one of: {', '.join(SAMPLERS)}."
            )
        if self.pruner not in PRUNERS:
            raise ConfigError(
                f"hydra.sweeper.pruner={self.pruner!r} is not valid; choose one of: {', '.join(PRUNERS)}."
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1.")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate} must be in [0, 1].")
        bad = [r for r in self.finder_rules if r not in FINDER_RULES]
        if bad:
            raise ConfigError(
                f"hydra.sweeper.finder_rules: {bad} unknown; choose from {', '.join(FINDER_RULES)}."
            )
        if len(self.directions) != len(self.metrics):
            raise ConfigError(
                f"hydra.sweeper.direction has {len(self.directions)} entries but metric has {len(self.metrics)}."
            )

    @property
    def directions(self) -> list[str]:
        return [
            str(d)
            for d in (self.direction if isinstance(self.direction, (list, tuple)) else [self.direction])
        ]

    @property
    def metrics(self) -> list[str]:
        return [str(m) for m in (self.metric if isinstance(self.metric, (list, tuple)) else [self.metric])]


SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
}
STORAGE_INDEXED = ("qmc", "grid")  # samplers whose sequence lives in the storage: keep one seed


def make_sampler(settings: SweepSettings, space: SearchSpace, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured Optuna sampler, seeded with `seed + offset` (the sweeper passes the number of
    trials already in the study, so a resumed sweep does not replay the first sweep's draws)."""
    seed = (
        None
        if settings.seed is None
        else settings.seed + (0 if settings.sampler in STORAGE_INDEXED else offset)
    )
    if settings.sampler == "grid":
        return _AskTellGridSampler(space.grid(), seed=seed)
    return SAMPLER_CLASSES[settings.sampler](seed=seed, **settings.sampler_kwargs)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call `study.stop()`, which only works inside
    `Study.optimize`; the sweeper caps `n_trials` at the grid's size instead."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def objective_values(summary: dict[str, Any], metrics: Sequence[str]) -> list[float]:
    """The objective values of a job's summary: final metrics by name, or `train_seconds`,
    `finder_seconds`, `total_seconds`."""
    values = []
    for name in metrics:
        if name in summary.get("metrics", {}):
            values.append(float(summary["metrics"][name]))
        elif name == "total_seconds":
            values.append(float(summary["train_seconds"]) + float(summary["finder_seconds"]))
        elif name in SEARCH_SECONDS_KEYS:
            values.append(float(summary[name]))
        else:
            raise ConfigError(
                f"hydra.sweeper.metric={name!r} is not something a run returns; use error_rate, "
                "valid_loss, accuracy, train_loss, train_seconds or total_seconds."
            )
    return values


def _heartbeats_on(storage: optuna.storages.BaseStorage) -> bool:
    """RDB storages opened by `open_storage` record heartbeats; journal storages cannot."""
    return bool(getattr(storage, "heartbeat_interval", None))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat:
    """Records a heartbeat for the trials being run, so that a killed sweep's trials can be failed."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: Sequence[int]):
        self.storage, self.trial_ids = storage, list(trial_ids)
        self.enabled = _heartbeats_on(storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:
                    log.debug(f"heartbeat for trial {trial_id} failed: {exc}")
            self._stop.wait(HEARTBEAT_INTERVAL_S)

    def __enter__(self) -> _Heartbeat:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()


class OptunaSweep(Sweeper):
    """A Hydra sweeper that fills an Optuna study up to `n_trials` finished (complete or pruned) trials."""

    def __init__(self, **settings: Any):
        plain = {
            k: (OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v)
            for k, v in settings.items()
        }
        self.settings = SweepSettings(**plain)
        self.launcher: Launcher | None = None
        self.config: DictConfig | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # ----------------------------------------------------------------------------------- study
    def _sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir)).resolve()

    def _study_name(self) -> str:
        if self.settings.study_name:
            return str(self.settings.study_name)
        choice = self.config.hydra.runtime.choices.get("search") or "search"
        return f"{self.config.name}-{choice}"

    def _storage_url(self) -> str:
        if self.settings.storage:
            return str(self.settings.storage)
        return f"sqlite:///{(self._sweep_dir() / 'optuna.db').as_posix()}"

    def open_study(self, space: SearchSpace) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
        url = self._storage_url()
        storage = open_storage(url)
        pruner_spec = {"name": self.settings.pruner, **self.settings.pruner_kwargs}
        study = optuna.create_study(
            storage=storage,
            study_name=self._study_name(),
            load_if_exists=True,
            sampler=make_sampler(self.settings, space),
            pruner=make_pruner(pruner_spec),
            directions=self.settings.directions,
        )
        existing = study.user_attrs.get(FIXED_ATTR)
        if existing is not None and existing != space.fixed:
            raise ConfigError(
                f"study {study.study_name!r} in {url} was started with the overrides {existing}, not {space.fixed}. "
                "Resume it with the same command, or start a new study with hydra.sweeper.study_name=NAME."
            )
        study.set_user_attr(FIXED_ATTR, space.fixed)
        study.set_user_attr(PRUNER_ATTR, pruner_spec)
        study.set_user_attr("lrlab.metric", self.settings.metrics)
        study.set_user_attr("lrlab.search_space", space.describe())
        study.set_user_attr("lrlab.sweep_dir", str(self._sweep_dir()))
        study.set_user_attr("lrlab.storage", url)
        return study, storage

    def recover(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
        """Fail trials left RUNNING by a dead sweep: on this host by process id, elsewhere by heartbeat."""
        host = socket.gethostname()
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get(WORKER_ATTR, ""))
            name, _, pid = worker.rpartition(":")
            if name == host and pid.isdigit() and not _pid_alive(int(pid)):
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                failed.append(trial.number)
        if _heartbeats_on(storage):
            before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            optuna.storages.fail_stale_trials(study)
            after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            failed += sorted(before - after)
        if failed:
            log.warning(
                f"trials {failed} were left RUNNING by a sweep that died; marked FAIL (they will be re-run)"
            )
        return failed

    def enqueue_baselines(self, study: optuna.Study) -> None:
        """Enqueue `enqueue` entries once per study: `lr_finder` gives one trial per finder rule,
        a mapping gives one trial with those params."""
        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        sources = {t.user_attrs.get(SOURCE) for t in study.get_trials(deepcopy=False, states=alive)}
        for entry in self.settings.enqueue:
            if entry == "lr_finder":
                for rule in self.settings.finder_rules:
                    source = f"lr_finder:{rule}"
                    if source not in sources:
                        study.enqueue_trial({}, user_attrs={SOURCE: source})
                        log.info(f"enqueued the range test's {rule} suggestion as a baseline trial")
            elif isinstance(entry, dict):
                study.enqueue_trial(dict(entry), user_attrs={SOURCE: "enqueued"}, skip_if_exists=True)
            else:
                raise ConfigError(
                    f"hydra.sweeper.enqueue entry {entry!r} is not valid; use lr_finder or a mapping of params."
                )

    # ----------------------------------------------------------------------------------- trials
    def _ask(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, space: SearchSpace, count: int
    ) -> list[optuna.Trial]:
        """Ask `count` trials; trials beyond the study's `n_trials` (another worker got there first)
        go back to WAITING for whoever needs one next."""
        worker = f"{socket.gethostname()}:{os.getpid()}"
        asked = []
        for _ in range(count):
            offset = len(study.get_trials(deepcopy=False))
            study.sampler = make_sampler(self.settings, space, offset=offset)
            trial = study.ask()
            if trial.number != offset:  # another worker asked at the same time: draw its own values
                study.sampler = make_sampler(self.settings, space, offset=trial.number)
            trial.set_user_attr(WORKER_ATTR, worker)
            asked.append(trial)
        taken = sorted(t.number for t in study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)))
        allowed = set(taken[: self.settings.n_trials])
        kept = []
        for trial in asked:
            if trial.number in allowed:
                kept.append(trial)
            else:
                storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        for trial in kept:
            if SOURCE not in trial.user_attrs:
                trial.set_user_attr(SOURCE, "search")
        return kept

    def _overrides(
        self, trial: optuna.Trial, space: SearchSpace, study: optuna.Study, parent_run_id: str | None
    ) -> list[str]:
        source = str(trial.user_attrs.get(SOURCE, "search"))
        overrides = list(space.fixed)
        if source.startswith("lr_finder:"):
            rule = source.split(":", 1)[1]
            for index in self._finder_stage_indices(space):
                overrides += [f"stages.{index}.lr=find", f"++stages.{index}.lr_rule={rule}"]
        else:
            for key, dist in space.params.items():
                overrides.append(space.override(key, _suggest(trial, key, dist)))
        overrides += [
            f"trial.storage={format_value(study.user_attrs['lrlab.storage'])}",
            f"trial.study={format_value(study.study_name)}",
            f"trial.number={trial.number}",
            f"trial.source={format_value(source)}",
            f"trial.metric={self.settings.metrics[0]}",
        ]
        if parent_run_id:
            overrides.append(f"tracking.parent_run_id={parent_run_id}")
        return overrides

    def _finder_stage_indices(self, space: SearchSpace) -> list[int]:
        """Stages whose LR the range test decides in a finder trial: those whose lr is `find` in the
        config, and those whose lr is searched."""
        searched = {int(k.split(".")[1]) for k in space.lr_keys()}
        found = {i for i, s in enumerate(self.config.stages) if str(s.lr) == "find" and int(s.epochs) > 0}
        return sorted(searched | found)

    def _record(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        trial: optuna.Trial,
        ret: JobReturn,
        space: SearchSpace,
    ) -> TrialState:
        """Tell Optuna how the job ended; a finder trial's params are the LRs its range tests chose."""
        if ret.status == JobStatus.COMPLETED:
            summary = ret.return_value
            try:
                values = objective_values(summary, self.settings.metrics)
            except ConfigError:
                study.tell(trial, state=TrialState.FAIL)
                raise
            if str(trial.user_attrs.get(SOURCE)).startswith("lr_finder:"):
                self._record_finder_params(storage, trial, summary, space)
            for key in ("metrics", "train_seconds", "finder_seconds", "stages", "run_id", "output_dir"):
                trial.set_user_attr(key, summary.get(key))
            study.tell(trial, values)
            return TrialState.COMPLETE
        error = ret._return_value
        if isinstance(error, optuna.TrialPruned):
            trial.set_user_attr("pruned", str(error))
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL

    def _record_finder_params(
        self,
        storage: optuna.storages.BaseStorage,
        trial: optuna.Trial,
        summary: dict[str, Any],
        space: SearchSpace,
    ) -> None:
        used = {f"stages.{s['index']}.lr": s["lr"] for s in summary.get("stages", [])}
        for key, dist in space.params.items():
            value = used.get(key, OmegaConf.select(self.config, key))
            widened = _widen(dist, value)
            if widened is not None:
                storage.set_trial_param(trial._trial_id, key, widened.to_internal_repr(value), widened)

    # ----------------------------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> list[Any]:
        """Run trials until the study holds `n_trials` finished ones; returns the batches' job returns."""
        assert self.config is not None and self.launcher is not None, "setup() must run first"
        s = self.settings
        if self.config.task != "train":
            raise ConfigError(
                f"a sweep needs task=train (its trials are trainings), not task={self.config.task}."
            )
        stages = OmegaConf.to_container(self.config.stages, resolve=True)
        space = parse_search_space(s.params, arguments, stages)
        if (
            self.config.hydra.runtime.choices.get("search") is None
            and space.is_discrete()
            and s.sampler == "tpe"
        ):
            # A plain `lrlab -m a=1,2 b=x,y` runs every combination once, as Hydra's basic sweeper does.
            s.sampler = "grid"
            s.n_trials = space.grid_size()
        elif s.sampler == "grid" and s.n_trials > space.grid_size():
            s.n_trials = space.grid_size()
            log.info(f"sampler=grid: n_trials capped at the grid's {s.n_trials} points")
        study, storage = self.open_study(space)
        sweep_dir = self._sweep_dir()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stale = self.recover(study, storage)
        self.enqueue_baselines(study)
        parent = self._parent_run(study, space)
        if parent is not None and stale:
            _kill_orphaned_children(parent, stale)
        log.info(
            f"study {study.study_name!r} in {study.user_attrs['lrlab.storage']}: "
            f"{_count(study, DONE)}/{s.n_trials} trials finished; searching {space.describe()}"
        )
        returns: list[Any] = []
        failures, last_error, status = 0, None, "FAILED"
        try:
            while True:
                self.recover(study, storage)
                done, running = _count(study, DONE), _count(study, (TrialState.RUNNING,))
                remaining = s.n_trials - done - running
                if remaining <= 0:
                    if running:
                        log.info(f"{running} trial(s) still running in other workers; this worker is done")
                    break
                trials = self._ask(study, storage, space, min(s.n_jobs, remaining))
                if not trials:
                    continue
                started = time.perf_counter()
                try:
                    batch = [
                        self._overrides(t, space, study, parent.run_id if parent else None) for t in trials
                    ]
                    self.validate_batch_is_legal(batch)
                    with _Heartbeat(storage, [t._trial_id for t in trials]):
                        results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
                except BaseException:
                    for t in trials:
                        _fail_quietly(study, t)
                    raise
                self.job_idx += len(batch)
                returns.append(results)
                for trial, ret in zip(trials, results, strict=True):
                    state = self._record(study, storage, trial, ret, space)
                    if state == TrialState.FAIL:
                        failures += 1
                        last_error = _frozen(study, trial.number).user_attrs.get("error")
                    log.info(_trial_line(study, trial, state, time.perf_counter() - started, s.n_trials))
                if failures > s.max_failure_rate * s.n_trials:
                    raise SweepFailed(
                        f"{failures} trials failed, more than max_failure_rate={s.max_failure_rate} of "
                        f"n_trials={s.n_trials}; the last error: {last_error}"
                    )
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._finish(study, sweep_dir, parent, status)
        return returns

    def _parent_run(self, study: optuna.Study, space: SearchSpace) -> Any:
        if self.config.tracking.backend != "mlflow":
            return None
        from lrlab.integrations.mlflow import (
            MlflowTracker,
            default_tracking_uri,
            provenance_tags,
        )

        uri = self.config.tracking.uri or default_tracking_uri(Path.cwd())
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id is not None:
            try:
                return MlflowTracker(uri, self.config.tracking.experiment, run_id=run_id)
            except Exception as exc:
                log.warning(
                    f"cannot continue the sweep's MLflow parent run {run_id} ({exc}); starting a new one"
                )
        tracker = MlflowTracker(uri, self.config.tracking.experiment, run_name=f"sweep-{study.study_name}")
        s = self.settings
        tracker.log_params(
            {
                "study_name": study.study_name,
                "storage": study.user_attrs["lrlab.storage"],
                "sampler": s.sampler,
                "seed": s.seed,
                "pruner": s.pruner,
                "direction": ",".join(s.directions),
                "metric": ",".join(s.metrics),
                "n_jobs": s.n_jobs,
                "max_failure_rate": s.max_failure_rate,
                "enqueue": ",".join(e if isinstance(e, str) else "params" for e in s.enqueue) or "none",
                **{f"search.{k}": v for k, v in space.describe().items()},
            }
        )
        tracker.set_tags(
            {
                **provenance_tags(Path.cwd()),
                "lrlab.sweep": "parent",
                "study_name": study.study_name,
                "sweep_dir": str(self._sweep_dir()),
                "fixed_overrides": " ".join(space.fixed),
            }
        )
        study.set_user_attr(PARENT_ATTR, tracker.run_id)
        study.set_user_attr("lrlab.mlflow_uri", uri)
        return tracker

    def _finish(self, study: optuna.Study, sweep_dir: Path, parent: Any, status: str) -> None:
        """Write the results file and the report, attach them to the parent run and end it."""
        try:
            results = write_results(study, sweep_dir)
            paths = [results]
            if self.settings.report:
                from lrlab.sweep.report import write_report

                paths += write_report(study, sweep_dir)
            if parent is not None:
                parent.set_tags({"n_trials": self.settings.n_trials, "finished_trials": _count(study, DONE)})
                best = _best(study)
                if best is not None:
                    for name, value in zip(self.settings.metrics, best.values, strict=True):
                        parent.log_metric(f"best_{name}", value)
                for path in paths:
                    parent.log_artifact(path)
            log.info(f"results: {results}" + (f"; report: {paths[1]}" if len(paths) > 1 else ""))
        finally:
            if parent is not None:
                parent.finish(status)
                log.info(
                    f"MLflow parent run {parent.run_id} ({_count(study, DONE)} finished trials) in {parent.uri}"
                )


def _suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)


def _widen(dist: BaseDistribution, value: Any) -> BaseDistribution | None:
    """`dist` widened to contain `value` (a finder's LR may fall outside the searched interval);
    None when `value` cannot belong to it."""
    if isinstance(dist, FloatDistribution) and isinstance(value, int | float) and not isinstance(value, bool):
        if dist.log and value <= 0:
            return None
        if dist.step is not None:
            return dist if dist.low <= value <= dist.high else None
        return FloatDistribution(min(dist.low, float(value)), max(dist.high, float(value)), log=dist.log)
    if isinstance(dist, IntDistribution) and isinstance(value, int) and not isinstance(value, bool):
        return dist if dist.low <= value <= dist.high else None
    if isinstance(dist, CategoricalDistribution) and value in dist.choices:
        return dist
    return None


def _frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    return study.best_trials[0]


def _fail_quietly(study: optuna.Study, trial: optuna.Trial) -> None:
    try:
        study.tell(trial, state=TrialState.FAIL)
    except Exception as exc:
        log.debug(f"could not fail trial {trial.number}: {exc}")


def _kill_orphaned_children(parent: Any, trial_numbers: Sequence[int]) -> None:
    """Child runs of trials that died with their sweep are still RUNNING in MLflow: end them KILLED."""
    numbers = {str(n) for n in trial_numbers}
    runs = parent.client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        if run.data.tags.get("trial.number") in numbers:
            parent.client.set_tag(run.info.run_id, "trial.state", "FAIL")
            parent.client.set_terminated(run.info.run_id, "KILLED")


def _trial_line(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, seconds: float, n_trials: int
) -> str:
    frozen = _frozen(study, trial.number)
    params = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in frozen.params.items()
    )
    if state == TrialState.COMPLETE:
        outcome = "value " + ", ".join(f"{v:.4f}" for v in frozen.values)
    elif state == TrialState.PRUNED:
        outcome = f"pruned at step {frozen.last_step}"
    else:
        outcome = f"FAILED ({frozen.user_attrs.get('error', '')})"
    done = _count(study, DONE)
    return f"[{done}/{n_trials}] trial {trial.number} ({frozen.user_attrs.get(SOURCE)}) {params}: {outcome} ({seconds:.0f} s)"


def write_results(study: optuna.Study, directory: Path) -> Path:
    """`optimization_results.yaml`: best params and value(s), counts, and where the study lives."""
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    data: dict[str, Any] = {
        "name": study.study_name,
        "storage": study.user_attrs.get("lrlab.storage"),
        "metric": study.user_attrs.get("lrlab.metric"),
        "directions": [d.name.lower() for d in study.directions],
        "trials": {k.lower(): v for k, v in sorted(states.items())},
    }
    best = _best(study)
    if best is not None and len(study.directions) == 1:
        data.update(
            best_params=dict(best.params),
            best_value=best.value,
            best_trial=best.number,
            best_source=best.user_attrs.get(SOURCE),
        )
    elif best is not None:
        data["best_trials"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)}
            for t in study.best_trials
        ]
    path = directory / RESULTS_FILE
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    return path
