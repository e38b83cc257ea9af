"""Parameter groups per layer group (decay / no-decay), per-group learning rates, and the
one-cycle, cosine and constant schedules built on torch's schedulers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lrlab.models.groups import LayerGroup

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
                out.append(
                    {"params": plist, "weight_decay": wd, "layer_group": index, "group_name": group.name}
                )
    return out


def build_optimizer(
    factory: OptimizerFactory,
    model: nn.Module,
    groups: Sequence[LayerGroup],
    lr: float,
    weight_decay: float | None = None,
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


def momentum_of(group: dict[str, Any]) -> float | None:
    """The momentum of a param group (SGD momentum or Adam beta1), or None."""
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None
