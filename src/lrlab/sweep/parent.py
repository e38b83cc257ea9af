"""The sweep's parent run in the tracking backend (`tracking.backend`, through the `Tracker` and
`TrackingBackend` protocol of `lrlab.integrations.tracking`, so no backend is named here): started
with the study (or continued when the study resumes), it holds the sweep's settings and search space
as params, the best metric(s) and, as tags, the best trial's params, value and child run id, the
results file and the report; each trial's job logs a child run under it. Child runs of trials that
died with their sweep are ended KILLED. With `tracking=none` the parent is the no-op `Tracker`
(its `run_id` is None): nothing is recorded and nothing is written to the study."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import optuna

from lrlab.integrations.locks import study_lock
from lrlab.integrations.provenance import provenance_tags
from lrlab.integrations.tracking import Tracker, TrackingBackend
from lrlab.sweep.results import best_trial
from lrlab.sweep.search_space import SearchSpace
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import DONE, MLFLOW_URI_ATTR, PARENT_ATTR, SOURCE, STORAGE_ATTR, count

log = logging.getLogger("lrlab.sweep")

TRIAL_TAG = "trial.number"  # the tag by which a trial's child run is found


def open_parent_run(
    backend: TrackingBackend,
    study: optuna.Study,
    settings: SweepSettings,
    space: SearchSpace,
    uri: str | None,
    experiment: str,
    sweep_dir: Path,
) -> Tracker:
    """Continue the study's parent run, or start one in `backend` at `uri` (already resolved by
    `backend.resolve_uri`, which checks it), recording its id in the study. Under the study's lock:
    workers started together would otherwise each start a parent run."""
    with study_lock(study.user_attrs[STORAGE_ATTR], study.study_name):
        return _open_parent_run(backend, study, settings, space, uri, experiment, sweep_dir)


def _open_parent_run(
    backend: TrackingBackend,
    study: optuna.Study,
    settings: SweepSettings,
    space: SearchSpace,
    uri: str | None,
    experiment: str,
    sweep_dir: Path,
) -> Tracker:
    """`open_parent_run`'s body, run under the study's lock."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is not None:
        try:
            return backend.open_run(uri, experiment, run_id=run_id)
        except Exception as exc:
            log.warning(f"cannot continue the sweep's parent run {run_id} ({exc}); starting a new one")
    tracker = backend.open_run(uri, experiment, run_name=f"sweep-{study.study_name}")
    if tracker.run_id is None:  # a backend that records nothing
        return tracker
    tracker.log_params(
        {
            "study_name": study.study_name,
            "storage": study.user_attrs[STORAGE_ATTR],
            "sampler": settings.sampler,
            "seed": settings.seed,
            "pruner": settings.pruner,
            "direction": ",".join(settings.directions),
            "metric": ",".join(settings.metrics),
            "n_jobs": settings.n_jobs,
            "max_failure_rate": settings.max_failure_rate,
            "enqueue": ",".join(e if isinstance(e, str) else "params" for e in settings.enqueue) or "none",
            **{f"search.{k}": v for k, v in space.describe().items()},
        }
    )
    tracker.set_tags(
        {
            **provenance_tags(Path.cwd()),
            "lrlab.sweep": "parent",
            "study_name": study.study_name,
            "sweep_dir": str(sweep_dir),
            "fixed_overrides": " ".join(space.fixed),
        }
    )
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    study.set_user_attr(MLFLOW_URI_ATTR, uri)
    return tracker


def kill_orphaned_children(parent: Tracker, trial_numbers: Sequence[int]) -> None:
    """End KILLED the child runs of trials that died with their sweep (still RUNNING in the backend)."""
    for number in dict.fromkeys(trial_numbers):
        for run_id in parent.child_runs({TRIAL_TAG: str(number)}, running_only=True):
            parent.end_child(run_id, "KILLED", {"trial.state": "FAIL"})


def child_run_id(parent: Tracker, trial_number: int) -> str | None:
    """The id of the parent's child run that logged trial `trial_number` (its latest, if retried)."""
    runs = parent.child_runs({TRIAL_TAG: str(trial_number)})
    return runs[0] if runs else None


def log_outcome(
    parent: Tracker, study: optuna.Study, settings: SweepSettings, artifacts: Sequence[Path]
) -> None:
    """Record the sweep's progress, best metric(s) and files on the parent run."""
    parent.set_tags({"n_trials": settings.n_trials, "finished_trials": count(study, DONE)})
    best = best_trial(study)
    if best is not None:
        tags = {"best.trial": best.number, "best.source": best.user_attrs.get(SOURCE) or "search"}
        tags.update({f"best.params.{k}": v for k, v in best.params.items()})
        for name, value in zip(settings.metrics, best.values, strict=True):
            parent.log_metric(f"best_{name}", value)
            tags[f"best.{name}"] = value
        child = child_run_id(parent, best.number)
        if child is not None:
            tags["best.child_run_id"] = child
        parent.set_tags(tags)
    for path in artifacts:
        parent.log_artifact(path)
    report = next((p for p in artifacts if p.suffix == ".md"), None)
    if report is not None:
        parent.set_description(report_headline(report.read_text(), report.name))


DESCRIPTION_CHARS = 6000  # under MLflow's 8,000-character limit on a tag value


def report_headline(report: str, name: str) -> str:
    """The report's sections before its trial list, for the top of the parent run's page: the
    answer (finder vs search, across seeds) without opening an artifact; its plots (relative links
    the page cannot follow) left out, cut at a line when long."""
    head = report.split("\n## Trials", 1)[0]
    plot = "!["  # a link to the run's artifacts, which the page cannot follow
    head = "\n".join(line for line in head.splitlines() if not line.startswith(plot)).rstrip()
    if len(head) > DESCRIPTION_CHARS:
        head = head[: head.rfind("\n", 0, DESCRIPTION_CHARS)] + "\n\n(cut short)"
    return f"{head}\n\nThe whole report: `{name}` in this run's artifacts."
