"""The tracking registry: a backend registered from outside lrlab (this module plus one YAML file)
records a real smoke run through the `Tracker` protocol, and an unknown backend is refused."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lrlab.app.run import run_experiment
from lrlab.app.schema import validate
from lrlab.errors import ConfigError
from lrlab.integrations.tracking import Tracker, TrackingBackend, backend_names, register_backend


class FakeTracker(Tracker):
    """Keeps everything it is asked to record in memory."""

    def __init__(self, experiment: str, run_name: str | None) -> None:
        self.run_id = f"fake-{len(FakeBackend.opened)}"
        self.experiment, self.run_name = experiment, run_name
        self.params: dict[str, Any] = {}
        self.tags: dict[str, Any] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.stages: list[str] = []
        self.artifacts: list[Path] = []
        self.models: list[Path] = []
        self.status: str | None = None

    def log_params(self, params: Any) -> None:
        self.params.update(params)

    def set_tags(self, tags: Any) -> None:
        self.tags.update(tags)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.metrics.setdefault(key, []).append((step, value))

    def on_stage_start(self, engine: Any, start: Any) -> None:
        self.stages.append(start.stage.name)

    def on_epoch_end(self, engine: Any, result: Any) -> None:
        self.log_metric("valid_loss", result.valid_loss, result.epoch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(Path(path))

    def log_model(self, checkpoint: Path, registered_name: str | None = None, examples: Any = ()) -> str:
        self.models.append(Path(checkpoint))
        return f"fake model from {checkpoint}"

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


class FakeBackend(TrackingBackend):
    opened: ClassVar[list[FakeTracker]] = []

    def open_run(self, uri, experiment, run_name=None, parent_run_id=None, run_id=None) -> FakeTracker:
        tracker = FakeTracker(experiment, run_name)
        FakeBackend.opened.append(tracker)
        return tracker


@pytest.fixture
def fake_backend(tmp_path: Path) -> Iterator[Path]:
    """`tracking=fake` registered for one test: the backend in the registry and its YAML in a
    config folder of the test's own, put on Hydra's search path. Returns that folder."""
    folder = tmp_path / "conf"
    (folder / "tracking").mkdir(parents=True)
    (folder / "tracking" / "fake.yaml").write_text("backend: fake\nlog_model: true\n")
    register_backend("fake", FakeBackend)
    FakeBackend.opened.clear()
    try:
        yield folder
    finally:
        from lrlab.integrations import tracking

        tracking._BACKENDS.pop("fake", None)


def test_a_backend_registered_from_a_test_records_the_smoke_run(compose_cfg, fake_backend, tmp_path) -> None:
    cfg = compose_cfg("experiment=smoke", "tracking=fake", f"hydra.searchpath=[file://{fake_backend}]")
    result = run_experiment(cfg, tmp_path / "run", launch_dir=tmp_path)

    (tracker,) = FakeBackend.opened
    assert result.run_id == tracker.run_id and tracker.status == "FINISHED"
    assert tracker.experiment == cfg.tracking.experiment and tracker.run_name.startswith(f"{cfg.name}-train-")
    assert tracker.params["model"]["name"] == cfg.model.name and tracker.tags["task"] == "train"
    assert tracker.stages == [s.name for s in cfg.stages if s.epochs > 0]
    epochs = [(r.epoch, r.valid_loss) for r in result.epochs]
    assert tracker.metrics["valid_loss"] == epochs and len(epochs) == sum(s.epochs for s in cfg.stages)
    assert tracker.metrics["test/accuracy"] == [(epochs[-1][0], result.test["accuracy"])]
    table = tmp_path / "run" / "epochs.csv"  # the run directory's table, logged with the run
    assert table in tracker.artifacts
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["epoch"]), r["stage"], float(r["valid_loss"])) for r in rows] == [
        (r.epoch, r.stage, r.valid_loss) for r in result.epochs
    ]
    assert tracker.models == [tmp_path / "run" / "checkpoints" / "final.pt"]  # the model test/* scored
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to MLflow


def test_an_unknown_backend_is_refused_naming_the_registered_ones(compose_cfg) -> None:
    assert set(backend_names()) >= {"mlflow", "none"}
    with pytest.raises(
        ConfigError, match=r"tracking\.backend='nope' is not valid; choose one of: mlflow, none"
    ):
        validate(compose_cfg("experiment=smoke", "tracking.backend=nope"))
