"""Where runs are recorded: the `Tracker` a run (or a sweep's parent run) logs to, and the registry
of tracking backends keyed by `tracking.backend` (`mlflow`, `none`). Runs and sweeps talk to these
two types only, so a new backend is one module with a `TrackingBackend` subclass, registered with
`register_backend`, plus one YAML file in `conf/tracking/`.

The registry holds import paths, not classes, so choosing a backend (and `lrlab --help`) never
imports MLflow until a run is recorded there.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrlab.core.types import Callback
from lrlab.errors import ConfigError

TRACKED_SCHEMES = ("runs:/", "models:/")  # checkpoint names of a store's run or registered model


def is_tracked(checkpoint: object) -> bool:
    """Whether a checkpoint is named as a tracked run or model (fetched from the store: the CLI's
    `checkpoint=`, `lrlab.load_model`) rather than as a file."""
    return str(checkpoint).startswith(TRACKED_SCHEMES)


class Tracker(Callback):
    """One run being recorded. As an engine callback it logs what the engine reports (stage
    decisions, steps, epochs); the run's code logs params, tags, metrics and files directly and
    ends the run with `finish`. Every method is a no-op here: a backend overrides what it records.
    `run_id` is None for a run that is recorded nowhere."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params; a backend flattens them to its own key format."""

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_metric(self, key: str, value: float, step: int = 0) -> None: ...

    def log_split_metrics(self, metrics: Mapping[str, float], split: str, step: int = 0) -> None:
        """Final metrics measured on one split (`valid`, `test`); a backend that knows the split's
        dataset and the run's logged model links them to both."""
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def flush(self) -> None:
        """Write what is buffered."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def set_description(self, markdown: str) -> None:
        """The run's summary, shown at the top of its page where the backend has one."""

    def log_datasets(
        self, name: str, digests: Mapping[str, str], sizes: Mapping[str, int], source: Mapping[str, Any]
    ) -> None:
        """The run's train / valid / test splits (content digests, sizes, the source's config)."""

    def log_model(
        self, checkpoint: Path, registered_name: str | None = None, examples: Sequence[bytes] = ()
    ) -> str | None:
        """Log the checkpoint's model in the backend's model format (registered under
        `registered_name` when given; `examples`: a few encoded images as its input example);
        returns a line saying where it went, or None."""
        return None

    def start_system_metrics(self, interval: float, resumed: bool) -> Any:
        """Start sampling CPU, memory, disk (...) into the run; returns an object with `stop()`, or None."""
        return None

    def child_runs(self, tags: Mapping[str, str], running_only: bool = False) -> list[str]:
        """Ids of this run's child runs carrying `tags`, newest first (a sweep's trial runs)."""
        return []

    def end_child(self, run_id: str, status: str, tags: Mapping[str, str]) -> None:
        """End a child run left behind by a dead process with `status`, setting `tags`."""

    def describe(self) -> str | None:
        """One line saying where the run is and how to look at it, or None."""
        return None

    def finish(self, status: str = "FINISHED") -> None:
        """End the run FINISHED, FAILED or KILLED (what is buffered is written first)."""


class TrackingBackend:
    """A place runs are recorded: `tracker` is its Tracker class, called as
    `tracker(uri, experiment, run_name, parent_run_id, run_id)`. `records_datasets`: whether the
    data's content digests are worth computing for it (they read every image once)."""

    records_datasets = False
    tracker: Any = None

    def resolve_uri(self, uri: str | None, launch_dir: Path) -> str | None:
        """The store this backend records to (`tracking.uri`, or its default beside `launch_dir`),
        checked so that a store that cannot be used fails before any work."""
        return uri

    def open_run(
        self,
        uri: str | None,
        experiment: str,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Tracker:
        """A new run of `experiment` (nested under `parent_run_id`), or, with `run_id`, that run continued."""
        if self.tracker is None:
            return Tracker()
        return self.tracker(uri, experiment, run_name, parent_run_id, run_id)

    def has_run(self, uri: str | None, run_id: str) -> bool:
        """Whether the store holds run `run_id` (a checkpoint copied from another launch folder
        names a run of another store)."""
        return True

    def run_status(self, uri: str | None, run_id: str) -> str | None:
        """The status of run `run_id` (`FINISHED`, `RUNNING`, `FAILED`, `KILLED`), None when the
        store does not hold it or records no runs."""
        return None

    def fetch_checkpoint(self, uri: str | None, ref: str, dest: Path) -> Path:
        """A local copy under `dest` of the checkpoint `ref` (e.g. `runs:/<run id>`) names in the store."""
        raise ConfigError(
            f"checkpoint={ref} names a tracked run or model, and this tracking backend has none."
        )


class NoTracking(TrackingBackend):
    """`tracking=none`: runs are recorded nowhere (their trackers do nothing)."""


_BACKENDS: dict[str, str | type[TrackingBackend]] = {
    "mlflow": "lrlab.integrations.mlflow:MlflowBackend",
    "none": NoTracking,
}


def register_backend(name: str, backend: str | type[TrackingBackend]) -> None:
    """Make `tracking.backend=name` record with `backend` (a TrackingBackend subclass, or the
    `module:Class` path of one, imported when first used)."""
    _BACKENDS[name] = backend


def backend_names() -> tuple[str, ...]:
    """The registered tracking backends (`tracking.backend` choices)."""
    return tuple(_BACKENDS)


def get_backend(name: str) -> TrackingBackend:
    """The registered backend called `name`; ConfigError listing the registered ones otherwise."""
    entry = _BACKENDS.get(str(name))
    if entry is None:
        raise ConfigError(
            f"tracking.backend={name!r} is not valid; choose one of: {', '.join(_BACKENDS)} "
            "(or register a backend with lrlab.integrations.tracking.register_backend)."
        )
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = _BACKENDS[str(name)] = getattr(importlib.import_module(module), attr)
    return entry()
