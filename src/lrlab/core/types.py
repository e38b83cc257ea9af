"""Types shared by the engine, optimizer groups, the staged trainer and callbacks: per-step and
per-epoch records, layer groups and the `Callback` hooks (integrations subclass it; the core never
imports them). No torch import, so light modules (the tracking registry, the CLI) can use them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Engine = Any  # the engine calling a hook (typed loosely: the engine module imports this one)


@dataclass
class StepRecord:
    """One optimizer step: its global index, mean loss, the LR/momentum applied per layer group
    and the gradients' L2 norm before clipping (of the trainable parameters)."""

    step: int
    loss: float
    lrs: dict[str, float]
    momentum: float | None
    grad_norm: float | None = None


@dataclass
class EpochResult:
    """Metrics of one epoch; `epoch` counts across stages, `stage_epoch` within the stage."""

    stage: str
    epoch: int
    stage_epoch: int
    train_loss: float
    valid_loss: float
    accuracy: float
    error_rate: float
    seconds: float
    train_images_per_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k in ("train_loss", "valid_loss", "accuracy", "error_rate")
        }


@dataclass
class LayerGroup:
    """An ordered slice of the network (body chunk or head) that shares a learning rate and freezing."""

    name: str
    param_names: list[str] = field(default_factory=list)


class Callback:
    """Hooks the engine calls (and the staged trainer, `on_stage_start`, with a
    `lrlab.train.stages.StageStart`); subclass and override what you need."""

    def on_stage_start(self, engine: Engine, start: Any) -> None: ...

    def on_fit_start(self, engine: Engine, stage: str, epochs: int, steps_per_epoch: int) -> None: ...

    def on_steps(self, engine: Engine, records: list[StepRecord]) -> None: ...

    def on_epoch_end(self, engine: Engine, result: EpochResult) -> None: ...

    def on_fit_end(self, engine: Engine, stage: str, results: list[EpochResult]) -> None: ...
