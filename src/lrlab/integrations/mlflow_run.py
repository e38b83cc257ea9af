"""What MLflow users expect on a run besides its params and metrics: the datasets it used (as
`mlflow.log_input` records them), the user and source tags MLflow's fluent API sets, and opt-in
system metrics. lrlab logs through `MlflowClient` with explicit run ids (no active fluent run, so
sweeps' children and resumed runs stay correct), so the entities are built here rather than by
`mlflow.log_input` / `mlflow.start_run(log_system_metrics=True)`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

SYSTEM_METRICS_INTERVAL_S = 10.0
INPUT_ATTEMPTS = 4  # a collision needs another writer between one check and its insert: rare twice
# How SQL stores word a unique-key collision: PostgreSQL (psycopg 2 and 3), SQLite, MySQL.
DUPLICATE_KEY_MARKERS = ("uniqueviolation", "duplicate key", "unique constraint", "duplicate entry")


def context_tags() -> dict[str, str]:
    """`mlflow.user`, `mlflow.source.name` and `mlflow.source.type`, resolved by MLflow's own context
    providers (the same values `mlflow.start_run` would set)."""
    from mlflow.tracking.context.registry import resolve_tags

    return {k: v for k, v in resolve_tags().items() if k.startswith("mlflow.")}


def dataset_inputs(
    name: str, digests: Mapping[str, str], sizes: Mapping[str, int], source: Mapping[str, Any]
) -> list[Any]:
    """One MLflow `DatasetInput` per split (context tag train / valid / test): the data source's
    name, the split's content digest, its size as the profile and the source config as JSON."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for split, digest in digests.items():
        dataset = Dataset(
            name=f"{name}-{split}",
            digest=digest,
            source_type="code",
            source=json.dumps(dict(source), sort_keys=True, default=str),
            profile=json.dumps({"num_rows": int(sizes.get(split, 0)), "split": split}),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)]))
    return inputs


def log_dataset_inputs(
    client: Any,
    run_id: str,
    name: str,
    digests: Mapping[str, str],
    sizes: Mapping[str, int],
    source: Mapping[str, Any],
) -> None:
    """Record the run's train / valid / test splits as its dataset inputs (what the MLflow UI's
    "Datasets used" column and `run.inputs` show). MLflow's SQL store looks a dataset up, then
    inserts it if missing, so runs logging the same dataset at once (a sweep's workers on one
    PostgreSQL store) can collide on its unique key; the failed call is rolled back whole, and a
    retry finds the other run's row and links it."""
    if not digests:
        return
    from mlflow.exceptions import MlflowException  # the REST and the SQL store raise it alike

    inputs = dataset_inputs(name, digests, sizes, source)
    for attempt in range(1, INPUT_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if attempt == INPUT_ATTEMPTS or not is_duplicate_key(exc):
                raise
            time.sleep(0.05 * attempt)


def is_duplicate_key(exc: BaseException) -> bool:
    """Whether a store error is a unique-key collision with a row another writer just inserted."""
    text = str(exc).lower()
    return any(marker in text for marker in DUPLICATE_KEY_MARKERS)


class SystemMetrics:
    """MLflow's system-metrics monitor (CPU, memory, disk, network and, with pynvml, GPU) for one
    run, sampled every `interval` seconds in a daemon thread; `stop` ends it. Needs psutil."""

    def __init__(
        self, uri: str, run_id: str, interval: float = SYSTEM_METRICS_INTERVAL_S, resume: bool = False
    ):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self.monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval, resume_logging=resume, tracking_uri=uri
        )
        self.monitor.start()

    def stop(self) -> None:
        """Stop sampling (the last samples are written first)."""
        self.monitor.finish()
