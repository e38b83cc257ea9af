"""MLflow tracking: one run per experiment (optionally nested under a parent), flattened config
params, config/override artifacts, provenance tags, buffered per-step and per-epoch metrics,
the epoch table, checkpoints, and a terminal status that is never left RUNNING."""

from __future__ import annotations

import csv
import importlib.metadata
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lrlab.core.types import Callback, EpochResult, StepRecord
from lrlab.integrations.process import owner_gone, worker_id

log = logging.getLogger(__name__)

MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
BATCH_LIMIT = 1000
OWNER_TAG = "lrlab.owner"  # <host>:<pid> of the process writing the run


def default_tracking_uri(directory: str | Path) -> str:
    """`sqlite:///<absolute directory>/mlflow.db`: absolute, so jobs started elsewhere share one store."""
    return f"sqlite:///{(Path(directory).resolve() / 'mlflow.db').as_posix()}"


def _store_schemes() -> set[str]:
    """URI schemes MLflow has a tracking store for (its registry, plugins included)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return set(_tracking_store_registry._registry)
    except (ImportError, AttributeError):
        return {"", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks"}


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any work, on a tracking URI MLflow cannot use: an unknown scheme, an
    SQLite file or folder that cannot be written, a server that does not answer within `timeout`
    seconds (MLflow itself retries for minutes). Raises LrlabError naming the URI."""
    import socket
    from urllib.parse import urlparse

    from lrlab.errors import LrlabError
    from lrlab.integrations.stores import require_driver, sqlite_path

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0]
    if scheme not in _store_schemes():
        raise LrlabError(
            f"tracking.uri={uri!r}: MLflow has no tracking store for {scheme + '://'!r}. Use "
            "sqlite:///path/mlflow.db (the default, in the launch folder), http(s)://host:port of an "
            "MLflow server, or a database URL; tracking=none runs without MLflow."
        )
    require_driver(uri, "tracking.uri")
    path = sqlite_path(uri)
    if path is not None:
        target = path if path.exists() else next(p for p in (path, *path.parents) if p.exists())
        if not os.access(target, os.W_OK):
            raise LrlabError(
                f"tracking.uri={uri!r}: {target} is not writable, so runs cannot be recorded there."
            )
    if scheme in ("http", "https"):
        port = parsed.port or (443 if scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "", port), timeout=timeout).close()
        except OSError as exc:
            raise LrlabError(
                f"tracking.uri={uri!r}: no MLflow server answers at {parsed.hostname}:{port} "
                f"({exc.strerror or type(exc).__name__}, {timeout:g} s timeout). Start it (mlflow server "
                "--port ...) or pick another tracking.uri; tracking=none runs without MLflow."
            ) from None


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys (`stages.0.lr`) to string values, cut to MLflow's key and value length limits."""
    items: dict[str, str] = {}
    if isinstance(tree, Mapping):
        pairs: Iterable[tuple[Any, Any]] = tree.items()
    elif isinstance(tree, (list, tuple)):
        pairs = enumerate(tree)
    else:
        return {prefix[:MAX_PARAM_KEY]: str(tree)[:MAX_PARAM_VALUE]}
    for key, value in pairs:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (Mapping, list, tuple)) and len(value) > 0:
            items.update(flatten(value, name))
        else:
            items[name[:MAX_PARAM_KEY]] = str(value)[:MAX_PARAM_VALUE]
    return items


def _git(*args: str, cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance_tags(cwd: str | Path | None = None) -> dict[str, str]:
    """Git commit and dirty flag (when `cwd` is in a git repo) and package versions."""
    tags: dict[str, str] = {}
    for pkg in ("lrlab", "torch", "torchvision", "timm", "mlflow", "optuna", "hydra-core"):
        try:
            tags[f"version.{pkg}"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    where = Path(cwd or Path.cwd())
    commit = _git("rev-parse", "HEAD", cwd=where)
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no", cwd=where)
        tags.update(
            {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": str(bool(status))}
        )
    return tags


def _opened_client(uri: str) -> Any:
    """An MlflowClient whose store has been opened (created and migrated if new)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)
    return client


def _forget(uri: str) -> None:
    """Drop MLflow's cached SQLAlchemy engine for `uri`, whose pooled connections may still point
    at a file that was just moved aside."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
    except (ImportError, AttributeError):
        return
    if engine is not None:
        engine.dispose()


def _experiment_id(client: Any, uri: str, experiment: str) -> str:
    """The id of `experiment`, created if missing (artifacts beside an SQLite store). Another
    process may create it between the lookup and the creation: then its experiment is used."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / experiment).as_uri()
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(experiment, artifact_location=location)
    except MlflowException:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def end_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """End KILLED the runs of the experiment left RUNNING by a process of this host that is gone
    (kill -9, the OOM killer: no `finally` ran); returns their ids."""
    ended = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG, "")
        if owner and owner_gone(owner):
            client.set_tag(
                run.info.run_id, "lrlab.ended", f"KILLED by a later run: its process {owner} was gone"
            )
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning(
                "MLflow run %s was left RUNNING by %s, which is gone: marked KILLED", run.info.run_id, owner
            )
            ended.append(run.info.run_id)
    return ended


class MlflowTracker(Callback):
    """Logs one run to an MLflow store; use as an engine callback and end it with `finish`."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ):
        """Start a new run, or (with `run_id`) continue an existing one, e.g. a resumed sweep's parent."""
        import mlflow

        for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from lrlab.integrations.stores import open_sqlite

        self.uri = uri
        self.client = open_sqlite(
            uri, "MLflow store", lambda: _opened_client(uri), reset=lambda: _forget(uri)
        )
        experiment_id = _experiment_id(self.client, uri, experiment)
        end_orphaned_runs(self.client, experiment_id)
        owner = {OWNER_TAG: worker_id()}
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, OWNER_TAG, owner[OWNER_TAG])
            self.run_id: str = run_id
        else:
            tags = {**owner, **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        self.experiment_id = experiment_id
        self._metrics: list[Any] = []
        self._metric_cls = mlflow.entities.Metric
        self._param_cls = mlflow.entities.Param
        self._tag_cls = mlflow.entities.RunTag
        self._rows: list[EpochResult] = []
        self.finished = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in MLflow-sized batches (values stringified and cut to the length limits)."""
        flat = flatten(dict(params))
        entries = [self._param_cls(k, v) for k, v in flat.items()]
        for i in range(0, len(entries), 100):
            self.client.log_batch(self.run_id, params=entries[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one store transaction (values cut to MLflow's length limit)."""
        entries = [self._tag_cls(k, str(v)[:5000]) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=entries)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one metric value (written at the next flush)."""
        if value is None or not math.isfinite(float(value)):
            value = float("nan")
        self._metrics.append(self._metric_cls(key, float(value), int(time.time() * 1000), int(step)))

    def flush(self) -> None:
        """Write buffered metrics with as few store transactions as MLflow allows."""
        while self._metrics:
            chunk, self._metrics = self._metrics[:BATCH_LIMIT], self._metrics[BATCH_LIMIT:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

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
            with tempfile.TemporaryDirectory() as tmp:
                for path in start.finder.save(tmp, f"lr_find_{name}", title=f"stage {name}"):
                    self.log_artifact(path, f"lr_finder/{name}")
            self.log_metric(f"{name}/lr_find_seconds", start.finder.seconds, engine.global_epoch)
        self.log_params(params)
        self.log_metric(f"{name}/lr", start.lr, engine.global_epoch)
        self.log_metric(f"{name}/trainable_params", start.trainable_params, engine.global_epoch)
        self.flush()

    def on_steps(self, engine: Any, records: list[StepRecord]) -> None:
        for r in records:
            self.log_metric("step_train_loss", r.loss, r.step)
            for group, lr in r.lrs.items():
                self.log_metric(f"lr_{group}", lr, r.step)
            if r.momentum is not None:
                self.log_metric("momentum", r.momentum, r.step)

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        values = {
            **result.metrics(),
            "epoch_seconds": result.seconds,
            "train_images_per_s": result.train_images_per_s,
        }
        for key, value in values.items():
            self.log_metric(key, value, result.epoch)
            self.log_metric(f"{result.stage}/{key}", value, result.epoch)
        self._rows.append(result)
        self.flush()

    def on_fit_end(self, engine: Any, stage: str, results: list[EpochResult]) -> None:
        self.flush()

    def log_epoch_table(self, rows: Sequence[EpochResult] | None = None) -> None:
        """The per-epoch table as `epochs.csv`."""
        rows = list(rows if rows is not None else self._rows)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "epochs.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(
                    [
                        "stage",
                        "epoch",
                        "stage_epoch",
                        "train_loss",
                        "valid_loss",
                        "error_rate",
                        "accuracy",
                        "seconds",
                    ]
                )
                for r in rows:
                    writer.writerow(
                        [
                            r.stage,
                            r.epoch,
                            r.stage_epoch,
                            r.train_loss,
                            r.valid_loss,
                            r.error_rate,
                            r.accuracy,
                            round(r.seconds, 3),
                        ]
                    )
            self.log_artifact(path)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with FINISHED, FAILED or KILLED (flushing what is buffered first)."""
        if self.finished:
            return
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)
            self.finished = True
