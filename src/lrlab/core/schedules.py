"""Learning-rate schedules on torch's schedulers: fastai's one-cycle (OneCycleLR), warm-up +
cosine and constant. Each takes `(optimizer, max_lr per param group, total_steps, **overrides)`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from lrlab.core.limits import LIMITS
from lrlab.core.optim import set_lrs


def _cycles_momentum(optimizer: torch.optim.Optimizer) -> bool:
    return "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: Sequence[float],
    total_steps: int,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    moms: Sequence[float] = (0.95, 0.85, 0.95),
) -> LRScheduler:
    """fastai's one-cycle through torch's OneCycleLR: lr_max/div -> lr_max (at pct_start) ->
    lr_max/div_final, cosine in both phases, momentum cycled opposite to the LR."""
    for key, value in (("pct_start", pct_start), ("div", div), ("div_final", div_final), ("moms", moms)):
        LIMITS[f"schedule.{key}"].check(value, f"schedule.{key}")
    set_lrs(optimizer, max_lr)
    return OneCycleLR(
        optimizer,
        max_lr=list(max_lr),
        total_steps=max(total_steps, 2),
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=_cycles_momentum(optimizer),
        base_momentum=moms[1],
        max_momentum=moms[0],
        div_factor=div,
        final_div_factor=div_final / div,
    )


def warmup_cosine_factor(
    step: int, total_steps: int, pct_start: float, div: float, div_final: float
) -> float:
    """LR multiplier: linear from 1/div to 1 over the warm-up, then cosine down to 1/div_final."""
    warm = round(pct_start * total_steps)
    if step < warm:
        return 1 / div + (1 - 1 / div) * step / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - warm - 1))
    low = 1 / div_final
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine(
    optimizer: torch.optim.Optimizer,
    max_lr: Sequence[float],
    total_steps: int,
    pct_start: float = 0.05,
    div: float = 25.0,
    div_final: float = 1e5,
) -> LRScheduler:
    """Linear warm-up then cosine decay, per group relative to its peak `max_lr`."""
    set_lrs(optimizer, max_lr)
    return LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total_steps, pct_start, div, div_final)
    )


def constant(
    optimizer: torch.optim.Optimizer,
    max_lr: Sequence[float],
    total_steps: int,
    pct_start: float | None = None,
    div: float | None = None,
    div_final: float | None = None,
) -> LRScheduler:
    """Every group stays at its `max_lr`. A stage's `pct_start`, `div` and `div_final` are
    accepted and have nothing to shape (no warm-up, no annealing), so every stage preset runs."""
    set_lrs(optimizer, max_lr)
    return LambdaLR(optimizer, lambda step: 1.0)
