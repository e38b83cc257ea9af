"""The engine callbacks a run uses besides its tracker: the console table, the record of each
stage's decisions, checkpoints, early stopping and the Optuna trial reporter."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lrlab.app.build import Setup
from lrlab.app.console import ConsoleTable, finder_file_stem
from lrlab.core.distributed import is_main
from lrlab.core.monitor import EarlyStopping, Monitor
from lrlab.core.types import Callback, EpochResult
from lrlab.integrations.optuna import TrialReporter, load_trial
from lrlab.train.checkpoints import CheckpointCallback
from lrlab.train.curves import TrainingCurves
from lrlab.train.epoch_table import EpochTable


class StageLog(Callback):
    """Records each stage's decisions (LR, rule, range-test seconds, steps and curve file, lr=auto's
    race), its steps per epoch and why it stopped early, if it did, for `RunResult.stages`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.stages: list[dict[str, Any]] = []

    def on_stage_start(self, engine: Any, start: Any) -> None:
        entry: dict[str, Any] = {
            "index": start.index,
            "name": start.stage.name,
            "lr": float(start.lr),
            "rule": start.rule,
        }
        if start.finder is not None:
            entry["finder_seconds"] = float(start.finder.spent_seconds)
            entry["finder_curve_seconds"] = float(start.finder.seconds)
            entry["finder_steps"] = len(start.finder.lrs)
            entry["suggestions"] = {r: float(v) for r, v in start.finder.suggestions.items()}
            entry["flag"] = start.finder.flags.get(start.rule) if start.rule else None
            entry["curve"] = str(self.directory / f"{finder_file_stem(start.stage.name)}.csv")
        if start.race is not None:
            race = start.race
            entry["race"] = {
                "suggestion": race.suggestion,
                "winner": race.winner,
                "metric": race.metric,
                "race_epochs": race.race_epochs,
                "epochs_trained": race.epochs_trained,
                "seconds": race.seconds,
                "candidates": [asdict(c) for c in race.candidates],
            }
        self.stages.append(entry)

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        if self.stages:
            self.stages[-1]["steps_per_epoch"] = steps_per_epoch

    def on_fit_end(self, engine: Any, stage: str, results: list[EpochResult]) -> None:
        reason = getattr(engine, "stop_reason", None)
        if reason and self.stages:
            self.stages[-1]["stopped_early"] = reason


@dataclass
class RunCallbacks:
    """The engine callbacks a run uses besides its tracker."""

    console: ConsoleTable
    stage_log: StageLog
    checkpoints: CheckpointCallback | None = None
    stopping: EarlyStopping | None = None
    trial: TrialReporter | None = None
    curves: TrainingCurves | None = None  # the training's curves (rank 0 of a training)
    epoch_table: EpochTable | None = None  # epochs.csv in the run directory (rank 0 of a training)

    @classmethod
    def create(cls, setup: Setup, output_dir: Path) -> RunCallbacks:
        """The callbacks `setup.cfg` asks for; under torchrun only rank 0 writes files (plots,
        checkpoints) and reports to Optuna, while every rank stops early on the same (all-reduced)
        metrics."""
        cfg = setup.cfg
        main = is_main()
        monitor = Monitor(cfg.train.monitor, cfg.train.mode, cfg.train.min_delta)
        hooks = cls(ConsoleTable(output_dir if main else None), StageLog(output_dir))
        if cfg.train.checkpoints and cfg.task == "train" and main:
            description = setup.model_description()
            hooks.checkpoints = CheckpointCallback(
                output_dir / "checkpoints", description, monitor, cfg.train.save_top_k
            )
        if cfg.task == "train" and main:
            hooks.curves = TrainingCurves()
            hooks.epoch_table = EpochTable(output_dir / "epochs.csv")
        if cfg.train.patience:
            hooks.stopping = EarlyStopping(monitor, cfg.train.patience)
        if cfg.trial.study is not None and main:
            trial = load_trial(cfg.trial.storage, cfg.trial.study, cfg.trial.number)
            hooks.trial = TrialReporter(trial, cfg.trial.metric)
        return hooks

    def all(self, tracker: Any) -> list[Any]:
        found = (
            self.console,
            self.stage_log,
            self.checkpoints,
            self.stopping,
            self.trial,
            self.curves,
            self.epoch_table,
            tracker,
        )
        return [c for c in found if c is not None]
