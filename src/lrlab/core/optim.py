"""Optimizer parameter groups: one decayed and one undecayed torch group per layer group (timm's
weight-decay conventions), and per-group learning rates and momentum."""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lrlab.core.types import LayerGroup

log = logging.getLogger("lrlab")

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get no weight decay, by timm's convention: every tensor with
    ndim <= 1 (norm weights, biases), every `.bias`, and whatever the model's own
    `no_weight_decay()` lists (position embeddings, class/distillation tokens; exact names, name
    prefixes or fnmatch patterns). Written here because timm's `param_groups_weight_decay` skips
    frozen parameters, and lrlab's optimizer must hold every parameter from the start."""
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    names = set()
    for name, param in model.named_parameters():
        pattern_match = any(
            name == pat or name.startswith(f"{pat}.") or fnmatch.fnmatchcase(name, pat) for pat in listed
        )
        if param.ndim <= 1 or name.endswith(".bias") or pattern_match:
            names.add(name)
    return names


def layer_decay_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Each parameter's LR multiplier under timm's layer-wise LR decay (`param_groups_layer_decay`,
    BEiT's rule: `layer_decay ** (layers above it)`, layers from the model's `group_matcher`), for
    every parameter: timm skips frozen ones, so all are marked trainable for the call and put back."""
    from timm.optim import param_groups_layer_decay

    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for param in model.parameters():
            param.requires_grad_(True)
        groups = param_groups_layer_decay(model, weight_decay=0.0, layer_decay=layer_decay)
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(trainable[name])
    return {names[id(p)]: float(g["lr_scale"]) for g in groups for p in g["params"]}


def param_groups(
    model: nn.Module, groups: Sequence[LayerGroup], weight_decay: float, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """Two torch param groups per layer group, decayed and not (see `no_weight_decay_names`), each
    tagged with its layer group's index and name; with `layer_decay`, each of those split further
    by timm's per-layer LR multiplier (`lr_scale`, see `layer_decay_scales`). Every parameter is
    included, trainable or not, so unfreezing never needs a new optimizer."""
    named = dict(model.named_parameters())
    exempt = no_weight_decay_names(model)
    scales = layer_decay_scales(model, layer_decay) if layer_decay else {}
    out: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        for decayed, wd in ((True, weight_decay), (False, 0.0)):
            members = [n for n in group.param_names if (n not in exempt) == decayed]
            for scale in sorted({scales.get(n, 1.0) for n in members}, reverse=True):
                plist = [named[n] for n in members if scales.get(n, 1.0) == scale]
                entry = {"params": plist, "weight_decay": wd, "layer_group": index, "group_name": group.name}
                out.append({**entry, "lr_scale": scale} if layer_decay else entry)
    return out


def build_optimizer(
    factory: OptimizerFactory,
    model: nn.Module,
    groups: Sequence[LayerGroup],
    lr: float,
    weight_decay: float | None = None,
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Call an optimizer factory (e.g. a Hydra partial of torch.optim.AdamW) on lrlab's param
    groups (with `layer_decay`, timm's layer-wise LR decay within them); on CUDA with `fused`
    unset, torch's fused kernels (see `fused_default`)."""
    keywords = getattr(factory, "keywords", {}) or {}
    wd = float(keywords.get("weight_decay", 0.0) if weight_decay is None else weight_decay)
    torch_groups = param_groups(model, groups, wd, layer_decay)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # Prodigy prints its settings; they are in the config
        optimizer = factory(torch_groups, lr=lr, **fused_default(factory, model))
    if printed.getvalue().strip():
        log.debug(f"{type(optimizer).__name__} printed: {printed.getvalue().strip()}")
    return optimizer


def fused_default(factory: OptimizerFactory, model: nn.Module) -> dict[str, bool]:
    """`{"fused": True}` when the model is on a CUDA device, the optimizer takes `fused` (Adam,
    AdamW, SGD, ...) and the config leaves it unset (null): one kernel launch updates every
    parameter instead of several per tensor list, which matters when GPU steps are launch-bound.
    Empty otherwise (torch's default: foreach kernels)."""
    keywords = getattr(factory, "keywords", {}) or {}
    first = next(model.parameters(), None)
    if keywords.get("fused") is not None or first is None or first.device.type != "cuda":
        return {}
    target = getattr(factory, "func", factory)
    try:
        accepts = "fused" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        accepts = False
    return {"fused": True} if accepts else {}


def group_lrs(optimizer: torch.optim.Optimizer, layer_group_lrs: Sequence[float]) -> list[float]:
    """Per torch param group learning rates from one learning rate per layer group (times the
    group's layer-wise decay multiplier, `lr_scale`, when it has one)."""
    return [float(layer_group_lrs[g["layer_group"]]) * g.get("lr_scale", 1.0) for g in optimizer.param_groups]


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


def gradient_norm(parameters: Iterable[nn.Parameter], device: torch.device | str) -> torch.Tensor:
    """The L2 norm of all gradients together (frozen parameters have none), as a tensor on
    `device` (no host sync); NaN when no parameter has a gradient. Not `clip_grad_norm_` with an
    infinite bound: that also multiplies every gradient by 1, a second pass over them each step."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.full((), float("nan"), device=device)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total_norm is not None:
        return total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
