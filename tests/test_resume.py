"""Resuming an interrupted training: 4 epochs straight and 2 epochs + SIGTERM + `resume=auto` for
the rest give bit-identical weights, final models and metrics on CPU, in the same MLflow run (with
AdamW under the weight EMA and Mixup, the LR-free optimizers, `lr=auto`, interrupted after its race,
and early stopping with the best epoch restored, whose wait and best epoch span the interruption)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import terminate_after_second_epoch
from lrlab.app.resume_changes import fresh_start_note
from lrlab.app.schema import validate
from lrlab.core.types import EpochResult
from lrlab.errors import ConfigError
from lrlab.models.checkpoint import CheckpointError
from lrlab.train.checkpoints import CONFIG_FILE, CheckpointCallback, load_checkpoint, load_resume

RUN = ("experiment=smoke", "epochs=4", "train.checkpoints=true", "hydra.run.dir=outputs/${now:%H-%M-%S-%f}")


def _final(directory: Path) -> tuple[dict[str, torch.Tensor], list[float], list]:
    checkpoint = load_checkpoint(
        max((directory / "outputs").rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    )
    client = MlflowClient(f"sqlite:///{directory / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (run,) = runs
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "valid_loss"))
    return checkpoint["model"], history, runs


def _epoch_table(directory: Path) -> list[tuple[str, ...]]:
    """The newest run's `epochs.csv` without its timings (stage, epochs, losses, error, accuracy)."""
    newest = max((directory / "outputs").rglob("epochs.csv"), key=lambda p: p.stat().st_mtime)
    with newest.open() as handle:
        return [tuple(row[:7]) for row in csv.reader(handle)]


OPTIMIZERS = {
    # AdamW with the weight EMA and Mixup: the average, the live weights and Mixup's numpy draws
    # resume; and early stopping with the best epoch restored: epoch 0 is the best (the valid loss
    # falls), so the wait and best.pt carry over the interruption, stopping after epoch 2
    "adamw_ema_mixup_early_stopping": (
        "train.ema_decay=0.9",
        "train.mixup_alpha=0.4",
        "train.patience=2",
        "train.mode=max",
        "train.restore_best=true",
    ),
    "prodigy": ("optimizer=prodigy", "schedule=constant", "lr=1"),  # its step-size estimate: optimizer state
    "schedulefree": ("optimizer=schedulefree_adamw", "schedule=constant", "lr=0.0025"),  # train/eval weights
    "lr_auto": ("lr=auto", "lr_finder.num_iter=30"),  # the race's winner, its first epoch replayed
}
EPOCHS = {"adamw_ema_mixup_early_stopping": 3}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_an_interrupted_training_resumes_bit_identically_into_the_same_run(
    run_cli, tmp_path: Path, optimizer: str
) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir()
    interrupted.mkdir()
    run = (*RUN, *OPTIMIZERS[optimizer])
    assert run_cli(*run, cwd=straight).returncode == 0
    assert terminate_after_second_epoch(*run, cwd=interrupted) == 143
    (killed,) = _final(interrupted)[2]
    assert killed.info.status == "KILLED"
    assert len(_epoch_table(interrupted)) > 1, "a killed run keeps the epochs it trained in epochs.csv"
    resumed = run_cli(*run, "resume=auto", cwd=interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in resumed.stdout + resumed.stderr

    weights, history, _ = _final(straight)
    weights_resumed, history_resumed, (run,) = _final(interrupted)
    assert run.info.status == "FINISHED" and run.info.run_id == killed.info.run_id
    assert "resumed_from" in run.data.tags
    assert history_resumed == history and len(history) == EPOCHS.get(optimizer, 4)
    assert _epoch_table(interrupted) == _epoch_table(straight)  # the resumed run's table is whole
    final, final_resumed = (_final_model(d) for d in (straight, interrupted))
    for straight_weights, resumed_weights in ((weights, weights_resumed), (final, final_resumed)):
        assert straight_weights.keys() == resumed_weights.keys()
        assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)


def _final_model(directory: Path) -> dict[str, torch.Tensor]:
    """The weights of the newest run's final model (`final.pt`: the best epoch's under restore_best)."""
    newest = max((directory / "outputs").rglob("final.pt"), key=lambda p: p.stat().st_mtime)
    return load_checkpoint(newest)["model"]


def test_resume_auto_without_a_matching_checkpoint_starts_a_new_training(run_cli, tmp_path: Path) -> None:
    """As Lightning's ckpt_path="last" and Composer's autoresume do, so a scheduler can submit the
    same command from the first attempt on; the note names the nearest other last.pt and whether
    it could be continued."""
    first = run_cli("experiment=smoke", "resume=auto", "tracking=none")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no checkpoints/last.pt under" in first.stdout and "starting a new training" in first.stdout
    assert "The nearest one" not in first.stdout
    (written,) = (tmp_path / "outputs").rglob("checkpoints/last.pt")
    assert "name: smoke" in (written.parent / CONFIG_FILE).read_text()
    # Resubmitted once FINISHED, without a tracking store to say so: its checkpoints say so.
    again = run_cli("experiment=smoke", "resume=auto", "tracking=none")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to resume:" in again.stdout and "test: the final" not in again.stdout
    longer = run_cli("experiment=smoke", "resume=auto", "tracking=none", "epochs=3")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert (
        f"The nearest one, {written}, differs in epochs (2 -> 3), stages.0.epochs (2 -> 3): " in longer.stdout
    )
    assert f"pass resume={written}" in longer.stdout
    assert len(list((tmp_path / "outputs").rglob("checkpoints/last.pt"))) == 2


def test_resume_auto_reads_config_yaml_instead_of_opening_other_runs_checkpoints(tmp_path: Path) -> None:
    """A last.pt whose config.yaml names another training is passed over unopened (here it could
    not even be read); one without config.yaml (an older run) is opened, as before."""
    other = tmp_path / "outputs" / "a" / "checkpoints"
    other.mkdir(parents=True)
    (other / "last.pt").write_bytes(b"not a checkpoint")
    (other / CONFIG_FILE).write_text("seed: 1\nresume: auto\n")
    assert load_resume("auto", "seed: 2\nresume: null\n", tmp_path) is None
    (other / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="is damaged or not a checkpoint"):
        load_resume("auto", "seed: 2\n", tmp_path)


def test_a_training_in_a_used_checkpoints_directory_rewrites_its_config_and_clears_finished(
    tmp_path: Path,
) -> None:
    """A resume into the same run directory (a fixed hydra.run.dir) may change `epochs`: its first
    last.pt brings config.yaml up to date, and the earlier training's `finished` mark goes, so a
    kill before its end is resumed, not taken for done."""
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / CONFIG_FILE).write_text("epochs: 2\n")
    (directory / "finished").touch()
    callback = CheckpointCallback(directory, {"config": "epochs: 3\n"})
    engine = SimpleNamespace(model=torch.nn.Linear(2, 2), history=[])
    callback.on_epoch_end(engine, EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    assert (directory / CONFIG_FILE).read_text() == "epochs: 3\n"
    assert not (directory / "finished").exists()
    callback.mark_finished()
    assert (directory / "finished").is_file()


def test_fresh_start_note_names_the_nearest_checkpoint_and_whether_it_continues() -> None:
    current = {"epochs": 4, "lr": 0.01, "optimizer": {"name": "adamw"}}
    candidates = [
        (Path("new/last.pt"), {"epochs": 2, "lr": 0.1, "optimizer": {"name": "sgd"}}),
        (Path("old/last.pt"), {"epochs": 2, "lr": 0.1, "optimizer": {"name": "adamw"}}),
    ]
    note = fresh_start_note(Path("outputs"), candidates, current)
    assert (
        "The nearest one, old/last.pt, differs in epochs (2 -> 4), lr (0.1 -> 0.01): it is another training."
        in note
    )
    same_training = [(Path("a/last.pt"), {**current, "epochs": 3})]
    assert "pass resume=a/last.pt" in fresh_start_note(Path("outputs"), same_training, current)
    assert fresh_start_note(Path("outputs"), [], current).endswith("after an interruption).")


def test_resume_auto_without_checkpoints_is_refused(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"resume=auto needs train\.checkpoints=true"):
        validate(compose_cfg("experiment=smoke", "resume=auto", "train.checkpoints=false"))


def test_resumes_users_try(run_cli, tmp_path: Path) -> None:
    """More epochs continue the same run (the change a tag, not a rewritten param); another
    optimizer setting is refused naming both sides; a checkpoint copied to another launch folder
    resumes into a new run there and says so."""
    first = ("experiment=smoke", "epochs=2", "train.checkpoints=true")
    assert run_cli(*first, "hydra.run.dir=outputs/a").returncode == 0
    last = tmp_path / "outputs" / "a" / "checkpoints" / "last.pt"

    longer = run_cli("experiment=smoke", "epochs=3", "train.checkpoints=true", f"resume={last}")
    assert longer.returncode == 0, longer.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    assert run.data.tags["resume.changed.epochs"] == "2 -> 3"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")] == [0, 1, 2]
    tested = len(client.get_metric_history(run.info.run_id, "test/accuracy"))

    # The same command again, once the run has FINISHED: nothing is redone, and the test split is
    # not read a second time into the run.
    again = run_cli("experiment=smoke", "epochs=3", "train.checkpoints=true", "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to resume:" in again.stdout + again.stderr and "test: the final" not in again.stdout
    assert len(client.get_metric_history(run.info.run_id, "test/accuracy")) == tested
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # Stopped before its end record, the run resumes again, and keeps its first `epochs` param (2)
    # although this checkpoint's config says 3 (MLflow refused the new value: a traceback, exit 1).
    client.update_run(run.info.run_id, "KILLED")
    ended = run_cli("experiment=smoke", "epochs=3", "train.checkpoints=true", "resume=auto")
    assert ended.returncode == 0, ended.stderr[-3000:]
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.params["epochs"] == "2"

    other = run_cli(*first, "optimizer.weight_decay=0.5", f"resume={last}")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "optimizer.weight_decay: 0.01 in the checkpoint, 0.5 now" in other.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_bytes(last.read_bytes())
    moved = run_cli(*first, "resume=last.pt", cwd=elsewhere)
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert "is not in sqlite" in moved.stdout + moved.stderr
    (new,) = MlflowClient(f"sqlite:///{elsewhere / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{elsewhere / 'mlflow.db'}").search_experiments()]
    )
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from"] == "last.pt"
