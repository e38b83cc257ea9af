"""The MLflow store a run records to: its default URI beside the launch folder, a check that
fails fast on a store MLflow cannot use, the opened client (an SQLite file created under lrlab's
lock) and the end of runs that a killed process left RUNNING."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrlab.integrations.process import owner_gone

log = logging.getLogger("lrlab.integrations.mlflow")

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


def _mlflow_major() -> int:
    from importlib.metadata import version

    return int(version("mlflow").split(".")[0])


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any work, on a tracking URI MLflow cannot use: an unknown scheme, MLflow
    3's file store, an SQLite file or folder that cannot be written or sits below a file, a server
    that does not answer within `timeout` seconds (MLflow itself retries for minutes). Raises
    LrlabError naming the URI."""
    import socket
    from urllib.parse import urlparse

    from lrlab.errors import LrlabError
    from lrlab.integrations.locks import sqlite_path
    from lrlab.integrations.stores import require_driver

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0]
    if scheme not in _store_schemes():
        raise LrlabError(
            f"tracking.uri={uri!r}: MLflow has no tracking store for {scheme + '://'!r}. Use "
            "sqlite:///path/mlflow.db (the default, in the launch folder), http(s)://host:port of an "
            "MLflow server, or a database URL; tracking=none runs without MLflow."
        )
    if scheme in ("", "file") and _mlflow_major() >= 3:
        raise LrlabError(
            f"tracking.uri={uri!r}: MLflow {_mlflow_major()}'s file store is in maintenance mode and "
            "fails to record lrlab's runs. Use an SQLite store in that folder instead: tracking.uri="
            f"sqlite:///{Path(parsed.path or uri).expanduser().resolve().as_posix()}/mlflow.db"
        )
    require_driver(uri, "tracking.uri")
    path = sqlite_path(uri)
    if path is not None:
        target = path if path.exists() else next(p for p in (path, *path.parents) if p.exists())
        if target != path and not target.is_dir():
            raise LrlabError(
                f"tracking.uri={uri!r}: {target} is a file, so the store cannot be created below it; "
                "point tracking.uri at a file in a folder (sqlite:///<folder>/mlflow.db)."
            )
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


def opened_client(uri: str) -> Any:
    """An MlflowClient whose store has been opened (created and migrated if new)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)
    return client


def forget_engine(uri: str) -> None:
    """Drop MLflow's cached SQLAlchemy engine for `uri`, whose pooled connections may still point
    at a file that was just moved aside."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
    except (ImportError, AttributeError):
        return
    if engine is not None:
        engine.dispose()


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the UI's classic ML view (no tag: its GenAI view)


def experiment_id(client: Any, uri: str, experiment: str) -> str:
    """The id of `experiment`, created if missing (artifacts beside an SQLite store) and tagged as a
    model-training experiment unless it says otherwise. Another process may create it between the
    lookup and the creation: then its experiment is used."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / experiment).as_uri()
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(
                experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id


def end_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """End KILLED the runs of the experiment left RUNNING by a process of this host that is gone
    (kill -9, the OOM killer: no `finally` ran); returns their ids."""
    ended = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        owner = run.data.tags.get(OWNER_TAG, "")
        if owner and owner_gone(owner):
            set_run_tags(
                client,
                run.info.run_id,
                {"lrlab.ended": f"KILLED by a later run: its process {owner} was gone"},
            )
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning(
                "MLflow run %s was left RUNNING by %s, which is gone: marked KILLED", run.info.run_id, owner
            )
            ended.append(run.info.run_id)
    return ended


def set_run_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """Set a run's tags in one batch: MLflow's batch retries when another process inserts the same
    tag at the same moment (two sweep workers ending on one parent), where `set_tag` fails."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
