"""lr=auto: the race around the range test's suggestion (Optuna's successive-halving pruner), the
winner continued from its state (bit-identical to a run at the winner's LR), its config checks,
and the CLI in single runs and sweeps."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from lrlab.core.engine import Engine
from lrlab.core.optim import build_optimizer
from lrlab.core.schedules import one_cycle
from lrlab.core.types import Callback
from lrlab.data.loaders import TensorLoader
from lrlab.data.types import ImageSource
from lrlab.errors import ConfigError, TrainingDiverged
from lrlab.finder.config import FinderConfig
from lrlab.integrations.optuna import SuccessiveHalvingJudge
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups
from lrlab.train.curves import TrainingCurves
from lrlab.train.stage import AutoLrConfig, Stage
from lrlab.train.stages import Training, run_stages

ADAMW = partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
FINDER = FinderConfig(num_iter=20, end_lr=1.0)


class Recorder(Callback):
    def __init__(self) -> None:
        self.starts, self.epochs, self.fits = [], [], []

    def on_stage_start(self, engine, start) -> None:
        self.starts.append(start)

    def on_fit_start(self, engine, stage, epochs, steps) -> None:
        self.fits.append((stage, epochs))

    def on_epoch_end(self, engine, result) -> None:
        self.epochs.append(result)


def _train(digits: ImageSource, stage: Stage, auto: AutoLrConfig | None = None, *callbacks: Callback):
    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=10)
    groups = layer_groups(model, 2)
    norm = normalization(model)
    train = TensorLoader(digits.train, 32, norm, shuffle=True, drop_last=True, seed=0)
    valid = TensorLoader(digits.valid, 64, norm)
    optimizer = build_optimizer(ADAMW, model, groups, lr=1e-3)
    recorder = Recorder()
    engine = Engine(model, callbacks=[recorder, *callbacks])
    auto = auto or AutoLrConfig()
    training = Training(
        groups, train, valid, optimizer, one_cycle, FINDER, auto=auto, judge=SuccessiveHalvingJudge
    )
    history = run_stages(engine, training, [stage])
    return model, history, recorder


def test_the_winner_continues_bit_identically_to_a_run_at_its_lr(digits) -> None:
    auto = AutoLrConfig(race=0.34)  # 1 of 3 epochs
    model, history, recorder = _train(digits, Stage("full", 3, lr="auto"), auto)
    (start,) = recorder.starts
    race = start.race
    assert [c.factor for c in race.candidates] == auto.factors
    assert [c.lr for c in race.candidates] == pytest.approx([race.suggestion * f for f in auto.factors])
    assert race.suggestion == pytest.approx(start.finder.suggestions["lrlab"])
    finished = [c for c in race.candidates if c.outcome == "finished"]
    assert race.winner == min(finished, key=lambda c: c.value).lr == start.lr
    # Callbacks saw one training: a single fit, and the winner's raced epoch replayed first.
    assert recorder.fits == [("full", 3)] and [r.stage_epoch for r in recorder.epochs] == [0, 1, 2]
    assert [r.stage_epoch for r in history] == [0, 1, 2]

    fixed_model, fixed_history, _ = _train(digits, Stage("full", 3, lr=race.winner))
    assert [r.valid_loss for r in history] == [r.valid_loss for r in fixed_history]
    for (name, mine), theirs in zip(model.state_dict().items(), fixed_model.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_the_race_is_on_the_training_curves_the_winner_as_the_stage_start(digits) -> None:
    curves = TrainingCurves()
    _, history, recorder = _train(digits, Stage("full", 3, lr="auto"), AutoLrConfig(race=0.34), curves)
    race = recorder.starts[0].race
    steps = len(digits.train.labels) // 32  # per epoch
    assert len(race.traces) == len(race.candidates) and race.start_step == 0
    winner = race.winner_trace()
    assert [r.step for r in winner.records] == list(range(steps))
    assert [(epoch, at) for epoch, at, _ in winner.epochs] == [(0, steps)]
    # The winner's raced epoch is the stage's start on the curves, not a gap before it.
    assert curves.steps == list(range(3 * steps)) and curves.stage_starts == [(0, "full")]
    assert curves.epochs == [(steps * (i + 1), r.valid_loss) for i, r in enumerate(history)]
    losers = [c for c in race.candidates if c.lr != race.winner]
    assert [line.label for line in curves.race_losers] == [f"race {c.lr:.2g} ({c.outcome})" for c in losers]
    assert all(
        line.steps[0] == 0 and len(line.steps) == len(line.losses) == len(line.lrs)
        for line in curves.race_losers
    )
    assert curves.race_ends == [steps]
    assert curves.figure().axes[0].get_legend_handles_labels()[1][2:4] == [
        line.label for line in curves.race_losers
    ]


def test_the_pruner_stops_a_candidate_that_trails_after_the_first_rung(digits) -> None:
    auto = AutoLrConfig(factors=[1.0, 300.0, 1 / 300], race=0.5)  # up to 2 of 4 epochs
    _, _, recorder = _train(digits, Stage("full", 4, lr="auto"), auto)
    race = recorder.starts[0].race
    first, *others = race.candidates
    assert first.outcome == "finished" and first.epochs == 2  # the first at a rung is always promoted
    assert any(c.outcome in ("pruned", "diverged") and c.epochs <= 1 for c in others), race.describe()
    assert race.epochs_trained == sum(c.epochs for c in race.candidates) < 6


def test_a_race_where_every_candidate_diverges_says_so(digits) -> None:
    with pytest.raises(TrainingDiverged, match="every raced LR diverged"):
        _train(digits, Stage("full", 2, lr="auto"), AutoLrConfig(factors=[1e7], race=0.5))


def test_a_race_without_a_judge_names_the_one_to_pass(digits) -> None:
    model = create_model("test_efficientnet", num_classes=10)
    groups = layer_groups(model, 2)
    train = TensorLoader(digits.train, 32, normalization(model), shuffle=True, drop_last=True, seed=0)
    optimizer = build_optimizer(ADAMW, model, groups, lr=1e-3)
    training = Training(groups, train, train, optimizer, one_cycle, FINDER)
    with pytest.raises(ConfigError, match="SuccessiveHalvingJudge"):
        run_stages(Engine(model), training, [Stage("full", 1, lr="auto")])


def test_lr_auto_settings_are_checked_and_lr_free_optimizers_refuse_it(compose_cfg) -> None:
    from lrlab.app.schema import validate

    validate(compose_cfg("experiment=smoke", "lr=auto"))
    for override, message in (
        ("lr_auto.race=1.5", r"lr_auto.race=1.5 is not valid: it must be a number in \(0, 1\)"),
        ("lr_auto.factors=[]", r"lr_auto.factors=\[\] must be one or more"),
        ("lr_auto.metric=accuracy", r"lr_auto.metric='accuracy' is not valid"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate(compose_cfg("experiment=smoke", "lr=auto", override))
    with pytest.raises(ConfigError, match=r"stages.0.lr=auto does not apply to optimizer=prodigy"):
        validate(compose_cfg("experiment=smoke", "lr=auto", "optimizer=prodigy"))


def test_lr_auto_from_the_cli_logs_the_race_and_one_training(run_cli, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    proc = run_cli("experiment=smoke", "lr=auto", "epochs=3", "lr_finder.num_iter=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stderr + proc.stdout
    assert "lr=auto: racing 3 LRs around the suggestion" in printed
    assert "study created in memory" not in printed  # the race's own study is no news to the user
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    candidates = run.data.params["stage.full.auto_candidates"].split(",")
    assert len(candidates) == 3 and all(c.split(":")[1] in ("finished", "pruned") for c in candidates)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_loss")] == [0, 1, 2]
    # The winner's raced steps are the run's first steps; the other candidates' are beside them.
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "step_train_loss"))
    assert steps == list(range(len(steps))) and len(steps) > 0
    winner = float(run.data.params["stage.full.lr"])
    raced = {float(c.split(":")[0]) for c in candidates} - {float(f"{winner:.3g}")}
    assert {k for k in run.data.metrics if k.startswith("race/")} == {
        f"race/full/{lr:.3g}/step_train_loss" for lr in raced
    }
    assert run.data.params["lr_auto.race"] == "0.2" and run.data.params["lr_auto.factors.0"] == "1.0"


def test_lr_auto_in_a_sweep(run_cli, tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_cli(
        "-m",
        "experiment=smoke",
        "lr=auto",
        "lr_finder.num_iter=30",
        "seed=0,1",
        "hydra.sweeper.study_name=auto",
        f"hydra.sweeper.storage={storage}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="auto", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        (stage,) = trial.user_attrs["stages"]
        assert stage["lr"] == stage["race"]["winner"] and len(stage["race"]["candidates"]) == 3
