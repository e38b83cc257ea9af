"""The monitored metric: early stopping ends a stage cleanly, checkpoints keep the best and the
top k by it, and a CLI run that stops early ends FINISHED with a tag saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrlab.core.monitor import EarlyStopping, Monitor
from lrlab.core.types import EpochResult
from lrlab.train.checkpoints import CheckpointCallback, load_checkpoint


class _Engine:
    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)
        self.stop_reason: str | None = None
        self.history: list[EpochResult] = []  # no epochs trained: the model's weights are any epoch's


def _result(epoch: int, valid_loss: float, accuracy: float = 0.5) -> EpochResult:
    return EpochResult("unfrozen", epoch, epoch, 1.0, valid_loss, accuracy, 1 - accuracy, 1.0)


def test_monitor_direction_and_min_delta() -> None:
    assert (
        not Monitor().maximize
        and Monitor("accuracy").maximize
        and Monitor("accuracy", "min").maximize is False
    )
    assert Monitor().better(0.5, 0.6) and not Monitor(min_delta=0.2).better(0.5, 0.6)
    assert not Monitor().better(float("nan"), 1.0)
    with pytest.raises(ValueError, match="monitor='f1' is not valid"):
        Monitor("f1")


def test_early_stopping_waits_patience_epochs_then_stops_the_stage() -> None:
    engine, stopping = _Engine(), EarlyStopping(Monitor(), patience=2)
    stopping.on_fit_start(engine, "unfrozen", 10, 1)
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.91]):
        stopping.on_epoch_end(engine, _result(epoch, loss))
        assert (engine.stop_reason is not None) == (epoch == 3)
    assert (
        "valid_loss did not improve on 0.9 for 2 epoch(s); stage unfrozen stopped after epoch 4"
        in (stopping.stops["unfrozen"])
    )


def test_engine_fit_ends_the_stage_when_a_callback_asks() -> None:
    from lrlab.core.engine import Engine
    from lrlab.core.schedules import constant
    from lrlab.data.loaders import TensorLoader
    from lrlab.data.sources import load_digits
    from lrlab.data.types import Normalization

    digits = load_digits(image_size=8)
    norm = Normalization((0.5,) * 3, (0.5,) * 3)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    stopping = EarlyStopping(Monitor("accuracy", "min"), patience=1)  # accuracy rises: "min" never improves
    engine = Engine(model, callbacks=[stopping])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train, valid = TensorLoader(digits.train, 256, norm, shuffle=True), TensorLoader(digits.valid, 256, norm)
    results = engine.fit(train, valid, opt, constant(opt, [0.01], 10 * len(train)), epochs=10, stage="s")
    assert len(results) == 2 and "stage s stopped after epoch 2" in engine.stop_reason
    assert engine.global_epoch == 2


def test_checkpoints_follow_the_monitor_and_keep_the_top_k(tmp_path: Path) -> None:
    callback = CheckpointCallback(tmp_path, monitor=Monitor("accuracy"), save_top_k=2)
    engine = _Engine()
    for epoch, accuracy in enumerate([0.5, 0.7, 0.6, 0.8, 0.55]):
        callback.on_epoch_end(engine, _result(epoch, 1.0, accuracy))
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == [
        "epoch1-accuracy0.7000.pt",
        "epoch3-accuracy0.8000.pt",
    ]


def test_an_lr_auto_winners_replayed_earlier_epochs_write_no_checkpoint(tmp_path: Path) -> None:
    """The race kept the winner's state after its last raced epoch only: an earlier raced epoch,
    replayed to the callbacks, must not save those weights under its own epoch and metrics."""
    callback, engine = CheckpointCallback(tmp_path), _Engine()
    engine.history = [_result(0, 0.5), _result(1, 0.9)]  # the winner's race: epoch 0 had the lower loss
    callback.on_epoch_end(engine, engine.history[0])
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()
    callback.on_epoch_end(engine, engine.history[1])
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1 and callback.best_epoch == 1


def test_a_resumed_stage_keeps_its_wait_and_a_stopped_one_trains_no_further_epoch() -> None:
    engine, stopping = _Engine(), EarlyStopping(Monitor(), patience=2)
    stopping.resume_stage([_result(epoch, loss) for epoch, loss in enumerate([1.0, 0.9, 0.95])])
    stopping.on_fit_start(engine, "unfrozen", 10, 1)
    assert engine.stop_reason is None
    stopping.on_epoch_end(engine, _result(3, 0.91))  # the second epoch without a new best, as uninterrupted
    assert "did not improve on 0.9 for 2 epoch(s)" in engine.stop_reason

    from lrlab.core.engine import Engine

    stopped = EarlyStopping(Monitor(), patience=1)
    stopped.resume_stage([_result(0, 1.0), _result(1, 1.2)])  # stopped after epoch 1, then interrupted
    fitted = Engine(torch.nn.Linear(2, 2), callbacks=[stopped])
    assert fitted.fit([], [], None, None, epochs=5, stage="unfrozen", start_epoch=2) == []
    assert fitted.global_epoch == 0 and "stopped after epoch 2" in fitted.stop_reason


def test_a_resumed_training_keeps_the_best_epoch_and_top_k_of_the_interrupted_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    before, after = tmp_path / "before", tmp_path / "after"
    first = CheckpointCallback(before, monitor=Monitor("accuracy"), save_top_k=2)
    history = [_result(epoch, 1.0, accuracy) for epoch, accuracy in enumerate([0.5, 0.8, 0.7])]
    for result in history:
        first.on_epoch_end(_Engine(), result)
    resumed = CheckpointCallback(after, monitor=Monitor("accuracy"), save_top_k=2)
    resumed.continue_from(SimpleNamespace(path=str(before / "last.pt"), history=history))
    resumed.on_epoch_end(_Engine(), _result(3, 1.0, 0.75))  # better than 0.5, not than 0.8
    assert load_checkpoint(after / "best.pt")["epoch"] == 1
    assert sorted(p.name for p in (after / "top").iterdir()) == [
        "epoch1-accuracy0.8000.pt",
        "epoch3-accuracy0.7500.pt",
    ]
    model = torch.nn.Linear(2, 2)
    assert resumed.restore_best(model)["epoch"] == 1
    best_weights = load_checkpoint(before / "best.pt")["model"]
    assert all(torch.equal(model.state_dict()[k], best_weights[k]) for k in best_weights)


@pytest.mark.slow
def test_a_run_stopped_early_finishes_with_a_tag_saying_why(run_cli, tmp_path: Path) -> None:
    proc = run_cli(
        "experiment=smoke",
        "epochs=6",
        "train.monitor=accuracy",
        "train.mode=min",
        "train.patience=1",
        "train.restore_best=true",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    epochs = len(client.get_metric_history(run.info.run_id, "valid_loss"))
    assert epochs < 6, "stopped before the stage's 6 epochs"
    assert "accuracy did not improve" in run.data.tags["early_stopping"]
    assert f"stage full stopped after epoch {epochs}" in run.data.tags["early_stopping"]
    assert f"early stopping: {run.data.tags['early_stopping']}" in proc.stdout  # below the epoch table
    # train.restore_best: the best epoch (here the least accurate) is the final model, tested and logged
    history = client.get_metric_history(run.info.run_id, "accuracy")
    best = min(history, key=lambda m: (m.value, m.step))
    assert best.step < epochs - 1 and run.data.metrics["final_accuracy"] == best.value
    checkpoints = next((tmp_path / "outputs").rglob("final.pt")).parent
    final, kept = load_checkpoint(checkpoints / "final.pt"), load_checkpoint(checkpoints / "best.pt")
    assert final["epoch"] == kept["epoch"] == best.step
    assert all(torch.equal(final["model"][k], kept["model"][k]) for k in kept["model"])
    assert f"train.restore_best: the final model is epoch {best.step} (full)" in proc.stdout
    description = run.data.tags["mlflow.note.content"]  # the run's page says both, too
    assert f"early stopping: {run.data.tags['early_stopping']}" in description
    assert f"final model: epoch {best.step} (full), the best by accuracy (train.restore_best)" in description
    evaluated = run_cli("task=evaluate", f"checkpoint={checkpoints / 'final.pt'}", "tracking=none")
    assert f"loss {run.data.metrics['test/loss']:.4f}" in evaluated.stdout  # test/* scored those weights
