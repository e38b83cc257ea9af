"""MLflow tracking: one run per experiment (optionally nested under a parent), flattened config
params, buffered per-step and per-epoch metrics, the epoch table, dataset inputs, the model, and a
terminal status that is never left RUNNING (the `mlflow` entry of the tracking registry)."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrlab.core.flat import flatten as flatten_config
from lrlab.core.types import EpochResult, StepRecord
from lrlab.integrations.mlflow_run import SystemMetrics, context_tags, log_dataset_inputs
from lrlab.integrations.mlflow_store import (
    OWNER_TAG,
    check_tracking_uri,
    default_tracking_uri,
    end_orphaned_runs,
    experiment_id,
    forget_engine,
    opened_client,
    set_run_tags,
)
from lrlab.integrations.process import worker_id
from lrlab.integrations.stores import open_sqlite
from lrlab.integrations.tracking import Tracker, TrackingBackend

__all__ = ["OWNER_TAG", "MlflowBackend", "MlflowTracker", "default_tracking_uri", "flatten"]

log = logging.getLogger("lrlab")
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
BATCH_LIMIT = 1000


def flatten(tree: Any) -> dict[str, str]:
    """Dotted keys (`stages.0.lr`) to string values, cut to MLflow's key and value length limits."""
    return {k[:MAX_PARAM_KEY]: str(v)[:MAX_PARAM_VALUE] for k, v in flatten_config(tree).items()}


class MlflowTracker(Tracker):
    """Logs one run to an MLflow store; use as an engine callback and end it with `finish`."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ):
        """Start a new run (with MLflow's user and source tags), or (with `run_id`) continue an
        existing one, e.g. a resumed training or a resumed sweep's parent."""
        import mlflow

        for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = uri
        self.client = open_sqlite(
            uri, "MLflow store", lambda: opened_client(uri), reset=lambda: forget_engine(uri)
        )
        self.experiment_id = experiment_id(self.client, uri, experiment)
        end_orphaned_runs(self.client, self.experiment_id)
        owner = {OWNER_TAG: worker_id()}
        self._first_params: dict[str, str] = {}  # a continued run's params: MLflow refuses new values
        if run_id is not None:
            self._first_params = dict(self.client.get_run(run_id).data.params)
            self.client.update_run(run_id, status="RUNNING")
            set_run_tags(self.client, run_id, owner)
            self.run_id: str = run_id
        else:
            tags = {
                **owner,
                **context_tags(),
                **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}),
            }
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        self._metrics: list[Any] = []
        self._datasets: dict[str, tuple[str, str]] = {}  # split -> (dataset name, digest)
        self.model_id: str | None = None  # the served model's id once logged
        self._metric_cls = mlflow.entities.Metric
        self._param_cls = mlflow.entities.Param
        self.finished = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in MLflow-sized batches (values stringified and cut to the length limits). A
        continued run keeps the first value of a param (a resume that changed it, e.g. the epochs,
        says so in its `resume.changed.*` tags; a second resume would otherwise log the new value)."""
        flat = flatten(dict(params))
        kept = {k: v for k, v in flat.items() if self._first_params.get(k, v) != v}
        if kept:
            log.debug(
                "params kept at the run's first values: %s", ", ".join(f"{k}={v}" for k, v in kept.items())
            )
        entries = [self._param_cls(k, v) for k, v in flat.items() if k not in kept]
        for i in range(0, len(entries), 100):
            self.client.log_batch(self.run_id, params=entries[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one store transaction (values cut to MLflow's length limit)."""
        set_run_tags(self.client, self.run_id, {k: str(v)[:5000] for k, v in tags.items()})

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one metric value (written at the next flush)."""
        if value is None or not math.isfinite(float(value)):
            value = float("nan")
        self._metrics.append(self._metric_cls(key, float(value), int(time.time() * 1000), int(step)))

    def log_split_metrics(self, metrics: Mapping[str, float], split: str, step: int = 0) -> None:
        """Final metrics of one split, linked to the split's dataset and to the logged model (so
        MLflow's Models tab shows the final values, per dataset)."""
        name, digest = self._datasets.get(split, (None, None))
        for key, value in metrics.items():
            value = float(value) if value is not None and math.isfinite(float(value)) else float("nan")
            self._metrics.append(
                self._metric_cls(
                    key,
                    value,
                    int(time.time() * 1000),
                    int(step),
                    model_id=self.model_id,
                    dataset_name=name,
                    dataset_digest=digest,
                )
            )
        self.flush()

    def flush(self) -> None:
        """Write buffered metrics with as few store transactions as MLflow allows."""
        while self._metrics:
            chunk, self._metrics = self._metrics[:BATCH_LIMIT], self._metrics[BATCH_LIMIT:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_description(self, markdown: str) -> None:
        set_run_tags(self.client, self.run_id, {"mlflow.note.content": markdown})  # the UI's run description

    def on_stage_start(self, engine: Any, start: Any) -> None:
        """Per stage: chosen LR and rule, peak LR per group, trainable params, range-test artifacts."""
        name = start.stage.name
        params = {
            f"stage.{name}.lr": f"{start.lr:.6g}",
            f"stage.{name}.lr_rule": start.rule or "fixed",
            f"stage.{name}.trainable_params": start.trainable_params,
            f"stage.{name}.trainable_groups": ",".join(start.trainable_groups),
        }
        params.update({f"stage.{name}.peak_lr.{g}": f"{v:.6g}" for g, v in start.layer_lrs.items()})
        if start.finder is not None:
            params.update(
                {f"stage.{name}.suggestion.{r}": f"{v:.6g}" for r, v in start.finder.suggestions.items()}
            )
            if start.rule and start.finder.flags.get(start.rule):
                params[f"stage.{name}.suggestion_flag"] = start.finder.flags[start.rule]
            with tempfile.TemporaryDirectory() as tmp:
                for path in start.finder.save(tmp, f"lr_find_{name}", title=f"stage {name}"):
                    self.log_artifact(path, f"lr_finder/{name}")
            self.log_metric(f"stages/{name}/lr_find_seconds", start.finder.spent_seconds, engine.global_epoch)
        if start.race is not None:
            race = start.race
            params[f"stage.{name}.auto_suggestion"] = f"{race.suggestion:.6g}"
            params[f"stage.{name}.auto_candidates"] = ",".join(
                f"{c.lr:.3g}:{c.outcome}:{c.epochs}" for c in race.candidates
            )
            self.log_metric(f"stages/{name}/race_seconds", race.seconds, engine.global_epoch)
            self.log_metric(f"stages/{name}/race_epochs", race.epochs_trained, engine.global_epoch)
            self._log_race_steps(engine, name, race)
        self.log_params(params)
        self.log_metric(f"stages/{name}/lr", start.lr, engine.global_epoch)
        self.log_metric(f"stages/{name}/trainable_params", start.trainable_params, engine.global_epoch)
        self.flush()

    def _log_race_steps(self, engine: Any, stage: str, race: Any) -> None:
        """The winner's steps as the run's own (its epochs arrive replayed, without them); every
        other candidate's loss per step as `race/<stage>/<lr>/step_train_loss`."""
        winner = race.winner_trace()
        for candidate, trace in zip(race.candidates, race.traces):
            if trace is winner:
                self.on_steps(engine, trace.records)
                continue
            for record in trace.records:
                self.log_metric(f"race/{stage}/{candidate.lr:.3g}/step_train_loss", record.loss, record.step)

    def on_steps(self, engine: Any, records: list[StepRecord]) -> None:
        for r in records:
            self.log_metric("step_train_loss", r.loss, r.step)
            for group, lr in r.lrs.items():
                self.log_metric(f"lr_{group}", lr, r.step)
            if r.momentum is not None:
                self.log_metric("momentum", r.momentum, r.step)
            if r.grad_norm is not None and math.isfinite(r.grad_norm):
                self.log_metric("step_grad_norm", r.grad_norm, r.step)

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        values = {
            **result.metrics(),
            "epoch_seconds": result.seconds,
            "train_images_per_s": result.train_images_per_s,
        }
        for key, value in values.items():
            self.log_metric(key, value, result.epoch)
            self.log_metric(f"{result.stage}/{key}", value, result.epoch)
        self.flush()

    def on_fit_end(self, engine: Any, stage: str, results: list[EpochResult]) -> None:
        self.flush()

    def log_datasets(
        self, name: str, digests: Mapping[str, str], sizes: Mapping[str, int], source: Mapping[str, Any]
    ) -> None:
        log_dataset_inputs(self.client, self.run_id, name, digests, sizes, source)
        self._datasets = {split: (f"{name}-{split}", digest) for split, digest in digests.items()}

    def log_model(
        self, checkpoint: Path, registered_name: str | None = None, examples: Sequence[bytes] = ()
    ) -> str | None:
        """The checkpoint (the final model's, `final.pt`) under `checkpoints/`, the served model under
        `model/` and the raw network under `pytorch_model/` (`lrlab.integrations.mlflow_model`)."""
        from lrlab.integrations.mlflow_model import log_models

        self.log_artifact(checkpoint, "checkpoints")
        self.flush()
        logged = log_models(self.uri, self.run_id, checkpoint, registered_name, examples)
        self.model_id = logged["model_id"]
        version = logged["registered_version"]
        return f"MLflow model: {logged['model_uri']}" + (
            f"; registered as {registered_name} v{version}" if version else ""
        )

    def start_system_metrics(self, interval: float, resumed: bool) -> SystemMetrics:
        return SystemMetrics(self.uri, self.run_id, interval, resume=resumed)

    def child_runs(self, tags: Mapping[str, str], running_only: bool = False) -> list[str]:
        filters = [f"tags.mlflow.parentRunId = '{self.run_id}'"]
        filters += [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
        if running_only:
            filters.append("attributes.status = 'RUNNING'")
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=" and ".join(filters), order_by=["attributes.start_time DESC"]
        )
        return [run.info.run_id for run in runs]

    def end_child(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        set_run_tags(self.client, run_id, tags)
        self.client.set_terminated(run_id, status)

    def describe(self) -> str:
        return f"MLflow run {self.run_id} in {self.uri}  (view: mlflow ui --backend-store-uri {self.uri})"

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with FINISHED, FAILED or KILLED (flushing what is buffered first)."""
        if self.finished:
            return
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)
            self.finished = True


class MlflowBackend(TrackingBackend):
    """`tracking=mlflow`: an MLflow store (an SQLite file beside the launch folder by default, any
    MLflow URI otherwise)."""

    records_datasets = True
    tracker = MlflowTracker

    def resolve_uri(self, uri: str | None, launch_dir: Path) -> str:
        uri = uri or default_tracking_uri(launch_dir)
        check_tracking_uri(uri)
        return uri

    def has_run(self, uri: str | None, run_id: str) -> bool:
        return self.run_status(uri, run_id) is not None

    def fetch_checkpoint(self, uri: str | None, ref: str, dest: Path) -> Path:
        from lrlab.integrations.mlflow_fetch import fetch_checkpoint

        return fetch_checkpoint(str(uri), ref, dest)

    def run_status(self, uri: str | None, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        from lrlab.integrations.locks import sqlite_path

        path = sqlite_path(uri or "")
        if path is not None and not path.is_file():
            return None  # no store yet (not created here: the tracker creates it under its lock)
        try:
            return str(opened_client(uri).get_run(run_id).info.status)
        except MlflowException:
            return None
