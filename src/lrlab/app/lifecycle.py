"""The life of a tracked run (task=train, lr_find and batch_size): everything that can fail on bad
input (config values, model name, weights, data, the tracking store) is built first; then the tracker's
run is opened, the task's body runs, and the run always ends FINISHED, FAILED or KILLED (a sweep's
trial also records its state: COMPLETE, FAIL or PRUNED)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from lrlab.app.build import Setup, build, make_engine
from lrlab.app.hooks import RunCallbacks
from lrlab.app.job import Job, RunResult
from lrlab.app.resume_changes import fresh_start_note, resume_changes
from lrlab.app.run_record import log_console, log_run_start, open_tracker
from lrlab.core.distributed import from_main, is_main
from lrlab.core.engine import Engine
from lrlab.errors import RunPruned
from lrlab.integrations.tracking import Tracker, get_backend
from lrlab.models.checkpoint import CheckpointError
from lrlab.train.checkpoints import (
    finished_mark,
    load_resume,
    recorded_config,
    resumable_checkpoints,
    saved_config,
)
from lrlab.train.resume import ResumeState

log = logging.getLogger("lrlab")


@dataclass
class TrackedRun:
    """What a task's body works with: the job, the built components, the engine (with every
    callback attached), the run's tracker and callbacks, and the state to resume from."""

    job: Job
    setup: Setup
    engine: Engine
    tracker: Tracker
    hooks: RunCallbacks
    resume: ResumeState | None = None


def tracked_run(job: Job, body: Callable[[TrackedRun], RunResult]) -> RunResult:
    """Build, open the run's tracker (under torchrun on rank 0 only), run `body` and end the run."""
    uri = get_backend(job.cfg.tracking.backend).resolve_uri(job.cfg.tracking.uri, job.launch_dir)
    setup = build(job.cfg)
    cfg = job.cfg = setup.cfg
    resume, changes, resumed_run = _resume_point(job, uri)
    hooks = RunCallbacks.create(setup, job.output_dir)
    backend = get_backend(cfg.tracking.backend)
    # Under torchrun only rank 0 may read the store: every rank acts on what it read.
    status = from_main(_recorded_status(backend, uri, resumed_run, resume) if is_main() else None)
    done = _nothing_to_resume(job, setup, resume, status)
    if done is not None:
        return done
    parent = job.parent_run_id or cfg.tracking.parent_run_id
    tracker = open_tracker(cfg, uri, parent, resumed_run) if is_main() else Tracker()
    engine = make_engine(setup, hooks.all(tracker))
    if tracker.run_id and hooks.checkpoints:
        hooks.checkpoints.meta["mlflow_run_id"] = tracker.run_id
    status, trial_state, failure = "FAILED", "FAIL", None
    monitor = None
    if cfg.tracking.system_metrics:
        monitor = tracker.start_system_metrics(cfg.tracking.system_metrics_interval, resumed_run is not None)
    try:
        log_run_start(tracker, setup, job.overrides, job.launch_dir, job.output_dir, changes)
        result = body(TrackedRun(job, setup, engine, tracker, hooks, resume))
        status, trial_state = "FINISHED", "COMPLETE"
        if hooks.stopping and hooks.stopping.stops:
            tracker.set_tags({"early_stopping": " | ".join(hooks.stopping.stops.values())})
    except RunPruned:
        status, trial_state = "KILLED", "PRUNED"
        raise
    except BaseException as exc:
        status, failure = ("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"), exc
        raise
    finally:
        if monitor is not None:
            monitor.stop()
        if cfg.trial.study is not None:
            tracker.set_tags({"trial.state": trial_state})
        log_console(tracker, job.output_dir, _log_artifact(resumed_run), failure)
        tracker.finish(status)
    result.output_dir, result.stages, result.run_id = job.output_dir, hooks.stage_log.stages, tracker.run_id
    if hooks.checkpoints is not None:
        hooks.checkpoints.mark_finished()
    where = tracker.describe()
    if where:
        log.info(where)
    return result


def _resume_point(job: Job, uri: str | None) -> tuple[ResumeState | None, dict, str | None]:
    """What `resume=` continues: the checkpoint's state, the keys the command line changed
    (key -> (checkpoint's, now)) and the run to continue in (None: a new run, e.g. for a checkpoint
    copied from another launch folder, whose run is not in this store)."""
    cfg = job.cfg
    if not cfg.resume:
        return None, {}, None
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resume = load_resume(str(cfg.resume), config_yaml, job.launch_dir)
    if resume is None:
        if is_main():
            _say_fresh_start(job, config_yaml)
        return None, {}, None
    before = yaml.safe_load(resume.meta.get("config") or "{}")
    changes = resume_changes(before, yaml.safe_load(config_yaml), resume.path)
    resumed_run = resume.meta.get("mlflow_run_id")
    if resumed_run and is_main() and not get_backend(cfg.tracking.backend).has_run(uri, resumed_run):
        log.warning(
            f"resume: the checkpoint's run {resumed_run} is not in {uri} (copied from another launch "
            "folder?); the resumed training is recorded in a new run, tagged resumed_from"
        )
        resumed_run = None
    return resume, changes, resumed_run


def _say_fresh_start(job: Job, config_yaml: str, looked_at: int = 20) -> None:
    """Warn that `resume=auto` found no checkpoint of this config and starts a new training, naming
    how the nearest of the newest `looked_at` last.pt files differs (a user who meant to continue
    it learns why it was not); damaged ones are passed over."""
    candidates = []
    for path in resumable_checkpoints(job.launch_dir)[:looked_at]:
        try:
            candidates.append((path, saved_config(recorded_config(path))))
        except CheckpointError:
            continue
    log.warning(fresh_start_note(job.launch_dir / "outputs", candidates, saved_config(config_yaml)))


def _recorded_status(
    backend: Any, uri: str | None, run_id: str | None, resume: ResumeState | None
) -> str | None:
    """How the resumed checkpoint's run ended: its status in the tracking store, or for a run the
    store does not hold (`tracking=none`) FINISHED when its checkpoints say so; None if unknown."""
    if run_id:
        return backend.run_status(uri, run_id)
    if resume is not None and finished_mark(Path(resume.path).parent).is_file():
        return "FINISHED"
    return None


def _log_artifact(resumed_run: str | None) -> str:
    """Where a run keeps its console log: `logs/lrlab.log`, and one more file per resume."""
    return f"logs/lrlab-resumed-{time.strftime('%Y%m%d-%H%M%S')}.log" if resumed_run else "logs/lrlab.log"


def _nothing_to_resume(
    job: Job, setup: Setup, resume: ResumeState | None, status: str | None
) -> RunResult | None:
    """The finished run's result when resuming would redo nothing: the checkpoint ends every stage
    and its run ended FINISHED (so it holds the test report and the model too); None otherwise."""
    if resume is None or status != "FINISHED":
        return None
    if not resume.trained_all([stage.epochs for stage in setup.stages]):
        return None
    run_id = resume.meta.get("mlflow_run_id")
    run = f"run {run_id}" if run_id else "its run"
    log.info(
        f"nothing to resume: {resume.path} ends the training of {run} (epoch "
        f"{resume.global_epoch}, every stage done), and that run is FINISHED with its test report "
        "and model. To train longer, raise the epochs with resume=PATH/TO/last.pt."
    )
    final = resume.history[-1].metrics() if resume.history else {}
    return RunResult(list(resume.history), final, run_id=run_id, output_dir=job.output_dir)
