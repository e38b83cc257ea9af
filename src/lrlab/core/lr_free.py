"""Driving the learning-rate-free optimizers the way their authors document. Schedule-Free AdamW
(`schedulefree`) keeps two weight sequences: it must be in `train()` mode for steps and in
`eval()` mode (the averaged weights) for evaluation and checkpoints, and BatchNorm statistics
must then be recomputed under the averaged weights. Prodigy (`prodigyopt`) needs nothing special:
it is stepped like Adam, its `lr` a multiplier of the step size it estimates."""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch
from torch import nn

NORM_REFRESH_BATCHES = 20  # training batches whose forward passes re-estimate BatchNorm statistics


def has_modes(optimizer: Any) -> bool:
    """Whether the optimizer switches between train and eval weights (Schedule-Free's API)."""
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def set_optimizer_mode(optimizer: Any, train: bool) -> bool:
    """Put an optimizer with modes in train or eval mode; returns whether it has modes."""
    if not has_modes(optimizer):
        return False
    (optimizer.train if train else optimizer.eval)()
    return True


@torch.no_grad()
def refresh_norm_statistics(engine: Any, loader: Any, batches: int = NORM_REFRESH_BATCHES) -> None:
    """Re-estimate the running statistics of the BatchNorm layers that train (not those the engine
    holds in eval mode) from `batches` training batches under the current weights, as the
    Schedule-Free README prescribes after `optimizer.eval()`. The model ends in eval mode."""
    held = {id(m) for m in engine.eval_modules}
    norms = [
        m
        for m in engine.model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in held
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    engine.train_mode()
    for x, _ in islice(loader, batches):
        x = x.to(engine.device, non_blocking=True)
        if engine.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with engine.autocast():
            engine.forward_model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    engine.model.eval()
