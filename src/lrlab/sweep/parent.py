"""The sweep's MLflow parent run: started with the study (or continued when the study resumes), it
holds the sweep's settings and search space as params, the best metric(s) and, as tags, the best
trial's params, value and child run id, the results file and the report; each trial's job logs a
child run under it. Child runs of trials that died with their sweep are ended KILLED. MLflow is
imported only when a parent run is opened."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from lrlab.sweep.lock import study_lock
from lrlab.sweep.results import best_trial
from lrlab.sweep.search_space import SearchSpace
from lrlab.sweep.settings import SweepSettings
from lrlab.sweep.study import DONE, MLFLOW_URI_ATTR, PARENT_ATTR, SOURCE, STORAGE_ATTR, count

if TYPE_CHECKING:
    from lrlab.integrations.mlflow import MlflowTracker

log = logging.getLogger("lrlab.sweep")


def open_parent_run(
    study: optuna.Study,
    settings: SweepSettings,
    space: SearchSpace,
    uri: str,
    experiment: str,
    sweep_dir: Path,
) -> MlflowTracker:
    """Continue the study's parent run, or start one (recording its id in the study). Under the
    study's lock: workers started together would otherwise each start a parent run."""
    from lrlab.integrations.mlflow import check_tracking_uri

    check_tracking_uri(uri)
    with study_lock(study.user_attrs[STORAGE_ATTR], study.study_name):
        return _open_parent_run(study, settings, space, uri, experiment, sweep_dir)


def _open_parent_run(
    study: optuna.Study,
    settings: SweepSettings,
    space: SearchSpace,
    uri: str,
    experiment: str,
    sweep_dir: Path,
) -> MlflowTracker:
    """`open_parent_run`'s body, run under the study's lock."""
    from lrlab.integrations.mlflow import MlflowTracker, provenance_tags
    from lrlab.integrations.mlflow_run import context_tags

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is not None:
        try:
            return MlflowTracker(uri, experiment, run_id=run_id)
        except Exception as exc:
            log.warning(f"cannot continue the sweep's MLflow parent run {run_id} ({exc}); starting a new one")
    tracker = MlflowTracker(uri, experiment, run_name=f"sweep-{study.study_name}")
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
            **context_tags(),
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


def kill_orphaned_children(parent: MlflowTracker, trial_numbers: Sequence[int]) -> None:
    """End KILLED the child runs of trials that died with their sweep (still RUNNING in MLflow)."""
    numbers = {str(n) for n in trial_numbers}
    runs = parent.client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' and attributes.status = 'RUNNING'",
    )
    for run in runs:
        if run.data.tags.get("trial.number") in numbers:
            parent.client.set_tag(run.info.run_id, "trial.state", "FAIL")
            parent.client.set_terminated(run.info.run_id, "KILLED")


def child_run_id(parent: MlflowTracker, trial_number: int) -> str | None:
    """The id of the parent's child run that logged trial `trial_number` (its latest, if retried)."""
    runs = parent.client.search_runs(
        [parent.experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{parent.run_id}' and tags.`trial.number` = '{trial_number}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_outcome(
    parent: MlflowTracker, study: optuna.Study, settings: SweepSettings, artifacts: Sequence[Path]
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
