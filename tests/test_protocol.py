"""The honest protocol, end to end in-process on the smoke experiment: choices (epoch table,
checkpoints, the range test's held-out loss, the sweep summary's metrics) use valid; the final
model is evaluated on test exactly once, after training, and reported apart; `test_pct=0` runs
with no test split and no test metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import lrlab.app.lifecycle as lifecycle_module
from lrlab.app.run import run_experiment

QUICK = ("experiment=smoke", "epochs=1", "train.checkpoints=false", "data.image_size=16")


class Counting:
    """A loader that records in `events` each time it is iterated (name, then the engine's epoch)."""

    def __init__(self, loader, name: str, events: list[str]):
        self.loader, self.name, self.events = loader, name, events

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.events.append(self.name)
        return iter(self.loader)


@pytest.fixture
def events(monkeypatch) -> list[str]:
    """Every pass over the valid and test loaders of the runs in this test, in order."""
    seen: list[str] = []
    real_build = lifecycle_module.build

    def build(cfg):
        setup = real_build(cfg)
        setup.valid_loader = Counting(setup.valid_loader, "valid", seen)
        if setup.test_loader is not None:
            setup.test_loader = Counting(setup.test_loader, "test", seen)
        return setup

    monkeypatch.setattr(lifecycle_module, "build", build)
    return seen


def test_test_is_read_once_after_training_and_reported_apart(compose_cfg, tmp_path: Path, events) -> None:
    cfg = compose_cfg(*QUICK, "lr=find", "lr_finder.num_iter=10", "lr_finder.val_batches=1", "tracking=none")
    result = run_experiment(cfg, tmp_path / "out", launch_dir=tmp_path)
    # the range test's held-out loss and each epoch's table row read valid; test comes once, last
    assert events.count("test") == 1 and events[-1] == "test"
    assert events.count("valid") >= 2, "the epoch table and the range test both evaluate on valid"
    summary = result.summary()
    last = result.epochs[-1]
    assert summary["metrics"] == last.metrics(), "what sweeps optimise is the valid split's"
    test = summary["test"]
    assert {"accuracy", "error_rate", "balanced_accuracy", "loss", "ece"} <= set(test)
    assert {f"recall/{d}" for d in range(10)} <= set(test) and "accuracy_2class" not in test
    assert all(0 <= test[k] <= 1 for k in test if k != "loss")
    assert result.test == test


def test_test_pct_zero_runs_without_test_metrics(compose_cfg, tmp_path: Path, events) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_cfg(*QUICK, "data.test_pct=0", f"tracking.uri={uri}")
    result = run_experiment(cfg, tmp_path / "out", launch_dir=tmp_path)
    assert "test" not in events and result.summary()["test"] == {}
    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert not [k for k in run.data.metrics if k.startswith("test/")]
    assert run.data.params["split.test"] == "0" and run.data.params["split.valid"] == "360"
    assert run.data.metrics["error_rate"] == result.epochs[-1].error_rate


def test_elpv_reports_per_class_recall_and_the_2class_accuracy(compose_cfg, tmp_path: Path) -> None:
    overrides = ("model=tiny", "stages=full", "epochs=1", "lr=1e-2", "data.image_size=16")
    cfg = compose_cfg(*overrides, "tracking=none", "train.checkpoints=false")
    test = run_experiment(cfg, tmp_path / "out", launch_dir=tmp_path).summary()["test"]
    recalls = {"recall/p_0", "recall/p_1_3", "recall/p_2_3", "recall/p_1"}
    assert recalls | {"accuracy", "error_rate", "balanced_accuracy", "loss", "ece", "accuracy_2class"} == set(
        test
    )
    # grouping can only merge mistakes: the 2-class accuracy is at least the 4-class one
    assert test["accuracy"] <= test["accuracy_2class"] <= 1
