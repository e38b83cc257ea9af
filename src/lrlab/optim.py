"""Parameter groups per layer group (decay / no-decay), per-group learning rates, and the
one-cycle, cosine and constant schedules built on torch's schedulers."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from lrlab.models import LayerGroup

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def param_groups(model: nn.Module, groups: Sequence[LayerGroup], weight_decay: float) -> list[dict[str, Any]]:
    """Two torch param groups per layer group: weights with `weight_decay`, and biases/norm
    parameters (ndim <= 1) without, each tagged with its layer group's index and name. Every
    parameter is included, trainable or not, so unfreezing never needs a new optimizer."""
    named = dict(model.named_parameters())
    out: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        params = [named[n] for n in group.param_names]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append({"params": plist, "weight_decay": wd, "layer_group": index, "group_name": group.name})
    return out


def build_optimizer(
    factory: OptimizerFactory, model: nn.Module, groups: Sequence[LayerGroup], lr: float, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """Call an optimizer factory (e.g. a Hydra partial of torch.optim.AdamW) on lrlab's param groups."""
    keywords = getattr(factory, "keywords", {}) or {}
    wd = float(keywords.get("weight_decay", 0.0) if weight_decay is None else weight_decay)
    return factory(param_groups(model, groups, wd), lr=lr)


def group_lrs(optimizer: torch.optim.Optimizer, layer_group_lrs: Sequence[float]) -> list[float]:
    """Per torch param group learning rates from one learning rate per layer group."""
    return [float(layer_group_lrs[g["layer_group"]]) for g in optimizer.param_groups]


def set_lrs(optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
    """Set each torch param group's learning rate (one value per param group)."""
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
        group.pop("initial_lr", None)


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


def warmup_cosine_factor(step: int, total_steps: int, pct_start: float, div: float, div_final: float) -> float:
    """LR multiplier: linear from 1/div to 1 over the warm-up, then cosine down to 1/div_final."""
    warm = int(round(pct_start * total_steps))
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
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total_steps, pct_start, div, div_final))


def constant(optimizer: torch.optim.Optimizer, max_lr: Sequence[float], total_steps: int) -> LRScheduler:
    """Every group stays at its `max_lr`."""
    set_lrs(optimizer, max_lr)
    return LambdaLR(optimizer, lambda step: 1.0)


def momentum_of(group: dict[str, Any]) -> float | None:
    """The momentum of a param group (SGD momentum or Adam beta1), or None."""
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None
