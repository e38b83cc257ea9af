"""The staged runner: one optimizer over all parameters, one scheduler per stage with per-group
peak learning rates, one `Engine.fit` per stage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from lrlab.engine import Engine, EpochResult
from lrlab.models import LayerGroup
from lrlab.optim import group_lrs

log = logging.getLogger("lrlab")

ScheduleFactory = Callable[..., Any]


@dataclass
class Stage:
    """One training stage: its name, epochs, peak learning rate and optional schedule overrides."""

    name: str
    epochs: int
    lr: float
    pct_start: float | None = None
    div: float | None = None
    div_final: float | None = None

    def schedule_overrides(self) -> dict[str, float]:
        return {k: v for k, v in (("pct_start", self.pct_start), ("div", self.div), ("div_final", self.div_final)) if v is not None}


def run_stages(
    engine: Engine,
    groups: Sequence[LayerGroup],
    train_loader: Any,
    valid_loader: Any,
    stages: Sequence[Stage],
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleFactory,
) -> list[EpochResult]:
    """Run each stage in order and return every epoch's result."""
    results: list[EpochResult] = []
    steps = engine.steps_per_epoch(train_loader)
    for stage in stages:
        if stage.epochs <= 0:
            continue
        layer_lrs = [stage.lr] * len(groups)
        log.info(
            f"stage {stage.name}: peak lr per layer group: "
            + ", ".join(f"{g.name}={lr:.3g}" for g, lr in zip(groups, layer_lrs))
        )
        scheduler = schedule(optimizer, max_lr=group_lrs(optimizer, layer_lrs), total_steps=steps * stage.epochs,
                             **stage.schedule_overrides())
        results += engine.fit(train_loader, valid_loader, optimizer, scheduler, stage.epochs, stage=stage.name)
    return results

