"""A monitored epoch metric (valid_loss, error_rate, accuracy, train_loss) and early stopping on it:
the rule checkpoints and stopping share, so "best" means the same thing to both."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lrlab.core.types import Callback, EpochResult

MONITORS = ("valid_loss", "error_rate", "accuracy", "train_loss")
MODES = ("auto", "min", "max")


@dataclass(frozen=True)
class Monitor:
    """Which epoch metric decides "better", and in which direction (`auto`: max for accuracy,
    min for losses and error rate). `min_delta`: the smallest change that counts as better."""

    metric: str = "valid_loss"
    mode: str = "auto"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in MONITORS:
            raise ValueError(f"monitor={self.metric!r} is not valid; choose one of: {', '.join(MONITORS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not valid; choose one of: {', '.join(MODES)}")

    @property
    def maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and self.metric == "accuracy")

    def value(self, result: EpochResult) -> float:
        return float(result.metrics()[self.metric])

    def worst(self) -> float:
        return -math.inf if self.maximize else math.inf

    def better(self, value: float, than: float) -> bool:
        """Whether `value` beats `than` by more than min_delta (NaN never does)."""
        if math.isnan(value):
            return False
        return value > than + self.min_delta if self.maximize else value < than - self.min_delta


@dataclass
class EarlyStopping(Callback):
    """Ends a stage once the monitored metric has not improved for `patience` epochs (each stage
    starts afresh); `stops` records why, per stage, for the run's tags."""

    monitor: Monitor
    patience: int
    stops: dict[str, str] = field(default_factory=dict)
    _best: float = field(default=math.nan, init=False)
    _waited: int = field(default=0, init=False)
    _resumed: list[EpochResult] = field(default_factory=list, init=False)

    def resume_stage(self, earlier: Sequence[EpochResult]) -> None:
        """Before a resumed training: the resumed stage's epochs trained before the interruption,
        counted when the stage starts, so the patience left and the best value are those of an
        uninterrupted run."""
        self._resumed = list(earlier)

    def on_fit_start(self, engine: Any, stage: str, epochs: int, steps_per_epoch: int) -> None:
        self._best, self._waited = self.monitor.worst(), 0
        earlier, self._resumed = self._resumed, []
        for result in earlier:
            self._count(engine, result)

    def on_epoch_end(self, engine: Any, result: EpochResult) -> None:
        self._count(engine, result)

    def _count(self, engine: Any, result: EpochResult) -> None:
        """Count one epoch: a new best resets the wait; `patience` epochs without one stop the stage."""
        value = self.monitor.value(result)
        if self.monitor.better(value, self._best):
            self._best, self._waited = value, 0
            return
        self._waited += 1
        if self._waited >= self.patience:
            reason = (
                f"{self.monitor.metric} did not improve on {self._best:.4g} for {self.patience} epoch(s); "
                f"stage {result.stage} stopped after epoch {result.stage_epoch + 1}"
            )
            self.stops[result.stage] = reason
            engine.stop_reason = reason
