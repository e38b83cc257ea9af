"""Types shared by the engine, the staged runner, callbacks and the config schema: a training
`Stage`, per-step and per-epoch records and the `Callback` hooks (integrations subclass it; the
core never imports them). No torch import, so the CLI can register `Stage` as a schema cheaply."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrlab.core.engine import Engine


@dataclass
class StepRecord:
    """One optimizer step: its global index, mean loss, and the LR/momentum applied per layer group."""

    step: int
    loss: float
    lrs: dict[str, float]
    momentum: float | None


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


class Callback:
    """Hooks the engine calls; subclass and override what you need."""

    def on_stage_start(self, engine: Engine, start: Any) -> None: ...

    def on_fit_start(self, engine: Engine, stage: str, epochs: int, steps_per_epoch: int) -> None: ...

    def on_steps(self, engine: Engine, records: list[StepRecord]) -> None: ...

    def on_epoch_end(self, engine: Engine, result: EpochResult) -> None: ...

    def on_fit_end(self, engine: Engine, stage: str, results: list[EpochResult]) -> None: ...


@dataclass
class Stage:
    """One training stage.

    trainable: 'head', 'all', or 'from:K' (layer groups K.. onwards; negative K counts from the end).
    lr: a number, or 'find' to take the range test's `lr_rule` suggestion times `lr_scale`.
    lr_spread: the first layer group gets lr / lr_spread, the head lr, geometric in between
    (lr_spread_mode 'slice_hi' instead gives every body group lr / lr_spread, as fastai's slice(lr)).
    """

    name: str
    epochs: int
    lr: Any = "find"  # a number or "find" (Any: OmegaConf 2.3 rejects an int such as lr=1 for float | str)
    trainable: str = "all"
    train_bn: bool = True
    lr_rule: str | None = None
    lr_scale: float = 1.0
    lr_spread: float = 1.0
    lr_spread_mode: str = "geometric"
    pct_start: float | None = None
    div: float | None = None
    div_final: float | None = None

    def schedule_overrides(self) -> dict[str, float]:
        return {
            k: v
            for k, v in (("pct_start", self.pct_start), ("div", self.div), ("div_final", self.div_final))
            if v is not None
        }
